// Removes the TypeScript output and the built labextension.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = join(dirname(fileURLToPath(import.meta.url)), '..');
for (const path of ['lib', 'tsconfig.tsbuildinfo', join('..', 'cmbagent_jupyter', 'labextension')]) {
  rmSync(join(pkg, path), { recursive: true, force: true });
}
