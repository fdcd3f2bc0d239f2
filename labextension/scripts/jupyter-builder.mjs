// Runs the Python `jupyter-builder` (installed with JupyterLab), which drives
// the npm package @jupyter/builder. npm scripts do not see the Python
// environment by themselves, so look for it where it usually is: on PATH (an
// activated venv, or pip's isolated build environment), then in $VIRTUAL_ENV,
// $CONDA_PREFIX and the repository's .venv.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..');
const exe = process.platform === 'win32' ? 'jupyter-builder.exe' : 'jupyter-builder';
const binDir = process.platform === 'win32' ? 'Scripts' : 'bin';

const candidates = [
  ...(process.env.PATH ?? '').split(delimiter).filter(Boolean),
  ...[process.env.VIRTUAL_ENV, process.env.CONDA_PREFIX, join(repoRoot, '.venv')]
    .filter(Boolean)
    .map((prefix) => join(prefix, binDir)),
].map((dir) => join(dir, exe));

const builder = candidates.find((path) => existsSync(path));
if (!builder) {
  console.error(
    'jupyter-builder was not found on PATH, in $VIRTUAL_ENV or in .venv.\n' +
      'Activate the Python environment that has JupyterLab installed ' +
      '(it provides jupyter-builder), or install the project with ' +
      '`pip install -e ".[test]"`, which runs this build for you.'
  );
  process.exit(1);
}

// Put the builder's own bin directory first so that anything it starts
// (node helpers, python) comes from the same environment.
const env = { ...process.env, PATH: [dirname(builder), process.env.PATH].join(delimiter) };
const result = spawnSync(builder, process.argv.slice(2), { stdio: 'inherit', env });
if (result.error) {
  console.error(result.error.message);
  process.exit(1);
}
process.exit(result.status ?? 1);
