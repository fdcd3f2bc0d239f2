// Bundles every widgets/src/*.ts entry (not *.d.ts, not files starting with "_")
// into one self-contained ES module per widget in cmbagent_jupyter/widgets/static/,
// which the Python side loads as the anywidget `_esm`.
import { build } from 'esbuild';
import { readdirSync, rmSync, mkdirSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const srcDir = join(here, 'src');
const outDir = join(here, '..', 'cmbagent_jupyter', 'widgets', 'static');

const isBundleOutput = (name) => name.endsWith('.js') || name.endsWith('.css');

if (process.argv.includes('--clean')) {
  for (const name of readdirSync(outDir, { withFileTypes: false }).filter(isBundleOutput)) {
    rmSync(join(outDir, name));
  }
  process.exit(0);
}

const entries = readdirSync(srcDir)
  .filter((name) => name.endsWith('.ts') && !name.endsWith('.d.ts') && !name.startsWith('_'))
  .map((name) => join(srcDir, name));

if (entries.length === 0) {
  console.error(`no widget entries found in ${srcDir}`);
  process.exit(1);
}

mkdirSync(outDir, { recursive: true });
await build({
  entryPoints: entries,
  outdir: outDir,
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  logLevel: 'info',
});
console.log(`bundled ${entries.map((e) => basename(e)).join(', ')} into ${outDir}`);
