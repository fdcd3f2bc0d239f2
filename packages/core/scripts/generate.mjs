// Generates src/schema.ts from schema/cmbagent.schema.json (which `cmbagent schema
// frontend` writes from the Python models): one TypeScript type per definition, and,
// for each string enum marked `x-constant`, an array constant of its values, so the
// front ends test states against the sets Python defines instead of copies.
// Needs no Python: the schema file is committed.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const here = dirname(fileURLToPath(import.meta.url));
const schemaPath = join(here, '..', 'schema', 'cmbagent.schema.json');
const outPath = join(here, '..', 'src', 'schema.ts');

if (process.argv.includes('--clean')) {
  rmSync(outPath, { force: true });
  rmSync(join(here, '..', 'lib'), { recursive: true, force: true });
  rmSync(join(here, '..', 'tsconfig.tsbuildinfo'), { force: true });
  process.exit(0);
}

/** A `$ref` alone: beside keywords (pydantic puts a field's default there) make the
 * generator copy the referenced type under a new name (RunStatus1, RunStatus2...). */
function bareRefs(node) {
  if (Array.isArray(node)) {
    return node.map(bareRefs);
  }
  if (node === null || typeof node !== 'object') {
    return node;
  }
  if (typeof node.$ref === 'string') {
    return { $ref: node.$ref };
  }
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, bareRefs(v)]));
}

const schema = JSON.parse(readFileSync(schemaPath, 'utf8'));
const banner =
  '/* Generated from schema/cmbagent.schema.json by scripts/generate.mjs; do not edit.\n' +
  ' * To change a type, change its Python model and run `cmbagent schema frontend --out\n' +
  ' * packages/core/schema/cmbagent.schema.json`. */';

const types = await compile(bareRefs(schema), schema.title, {
  bannerComment: banner,
  // A definition says whether it allows more properties; pydantic models that do not
  // say allow none the front ends could rely on.
  additionalProperties: false,
  format: true,
  strictIndexSignatures: true,
  unknownAny: true,
});

const constants = [];
for (const [name, def] of Object.entries(schema.$defs ?? {})) {
  const constant = def['x-constant'];
  if (!constant) {
    continue;
  }
  if (!Array.isArray(def.enum) || !def.enum.every((v) => typeof v === 'string')) {
    throw new Error(`${name}: x-constant needs a string enum`);
  }
  const description = def.description ? `/** ${def.description} */\n` : '';
  constants.push(`${description}export const ${constant}: readonly ${name}[] = ${JSON.stringify(def.enum)};`);
}

const version = schema['x-event-schema-version'];
const extra = [
  '',
  '/** The version of the event envelope these types describe. */',
  `export const EVENT_SCHEMA_VERSION = ${JSON.stringify(version)};`,
  '',
  ...constants.flatMap((c) => [c, '']),
];
writeFileSync(outPath, types + extra.join('\n'));
console.log(`generated ${outPath} (${Object.keys(schema.$defs ?? {}).length} definitions, ${constants.length} constants)`);
