// The production build in one process (what `pip install .` runs):
// clean, transpile src -> lib, bundle the widget, build the Lab extension.
import { spawnSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const step = args => {
  const result = spawnSync(args[0], args.slice(1), { cwd: root, stdio: 'inherit' });
  if (result.status !== 0) {
    process.exit(result.status ?? 1);
  }
};

step([process.execPath, resolve(here, 'clean.mjs')]);
step([process.execPath, resolve(here, 'transpile.mjs')]);
step([process.execPath, resolve(here, 'bundle-widget.mjs'), '--minify']);
step(['jupyter-builder', 'build', '.']);
