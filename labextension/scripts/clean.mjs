// Remove build output: the TypeScript lib, the Lab extension and the widget bundle.
import { rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
for (const target of [
  'lib',
  'tsconfig.tsbuildinfo',
  '../lumen_jupyter/labextension',
  '../lumen_jupyter/widgets/static'
]) {
  rmSync(resolve(root, target), { recursive: true, force: true });
}
