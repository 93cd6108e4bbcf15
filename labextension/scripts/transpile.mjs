// Turn src/**/*.ts into lib/**/*.js, file by file, for the Lab extension builder.
// Transpiling only: `jlpm typecheck` (tsc) checks the types, and `jlpm build`
// (development) runs tsc itself. This keeps `pip install .` quick.
import { build } from 'esbuild';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
await build({
  entryPoints: [resolve(root, 'src/**/*.ts')],
  outdir: resolve(root, 'lib'),
  outbase: resolve(root, 'src'),
  bundle: false,
  format: 'esm',
  target: 'es2020',
  platform: 'browser',
  sourcemap: true,
  logLevel: 'warning'
});
