// Validates Grafana dashboard JSON files against the schema dashboards/schema/generate.sh made.
//
//   node dashboards/schema/validate.mjs SCHEMA DASHBOARD...
//
// Exit status: 0 when every dashboard is valid, 1 when one is not (each error is printed on
// stderr with its JSON pointer), 2 on a usage error or an unreadable file. ajv is loaded from
// the node_modules next to SCHEMA (generate.sh installs it there, in target/).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [schemaPath, ...dashboards] = process.argv.slice(2);
if (!schemaPath || dashboards.length === 0) {
  console.error('usage: node validate.mjs SCHEMA DASHBOARD...');
  process.exit(2);
}

function readJson(file) {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    console.error(`${file}: ${e.message}`);
    process.exit(2);
  }
}

const require = createRequire(path.resolve(schemaPath));
let Ajv;
try {
  Ajv = require('ajv').default;
} catch (e) {
  console.error(`cannot load ajv next to ${schemaPath} (run dashboards/schema/generate.sh): ${e.message}`);
  process.exit(2);
}

// strict: the schema itself must use only known keywords; allErrors: report everything at once.
const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, allowUnionTypes: true });
const validate = ajv.compile(readJson(schemaPath));

let failed = 0;
for (const file of dashboards) {
  const doc = readJson(file);
  if (validate(doc)) {
    console.log(`${file}: valid`);
    continue;
  }
  failed += 1;
  for (const err of validate.errors) {
    const extra = err.params && err.params.additionalProperty
      ? ` (${err.params.additionalProperty})`
      : err.params && err.params.allowedValues
        ? ` (${JSON.stringify(err.params.allowedValues)})`
        : '';
    console.error(`${file}: ${err.instancePath || '/'} ${err.message}${extra}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
