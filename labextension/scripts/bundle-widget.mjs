// Bundle the anywidget entry (src/widget.ts and the shared views) into one ES module,
// plus its stylesheet, inside the Python package: lumen_jupyter/widgets/static/.
// Everything the widget needs is in these two files; nothing is fetched at run time.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const out = resolve(root, '../lumen_jupyter/widgets/static');
const minify = process.argv.includes('--minify');

mkdirSync(out, { recursive: true });
await build({
  entryPoints: [resolve(root, 'src/widget.ts')],
  outfile: resolve(out, 'profile.js'),
  bundle: true,
  format: 'esm',
  target: 'es2020',
  platform: 'browser',
  minify,
  legalComments: 'none',
  logLevel: 'warning'
});
copyFileSync(resolve(root, 'style/views.css'), resolve(out, 'profile.css'));
console.log(`widget bundle written to ${out}${minify ? ' (minified)' : ''}`);
