// Bundle the browser entries built on the shared views into the Python package,
// lumen_jupyter/widgets/static/: the anywidget entry (src/widget.ts -> profile.js,
// with profile.css) and the admin page of the lumen service (src/admin.ts ->
// admin.js, with admin.css). Everything each needs is in its files; nothing is
// fetched at run time.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');
const out = resolve(root, '../lumen_jupyter/widgets/static');
const minify = process.argv.includes('--minify');

mkdirSync(out, { recursive: true });
for (const [entry, bundle] of [
  ['src/widget.ts', 'profile.js'],
  ['src/admin.ts', 'admin.js']
]) {
  await build({
    entryPoints: [resolve(root, entry)],
    outfile: resolve(out, bundle),
    bundle: true,
    format: 'esm',
    target: 'es2020',
    platform: 'browser',
    minify,
    legalComments: 'none',
    logLevel: 'warning'
  });
}
copyFileSync(resolve(root, 'style/views.css'), resolve(out, 'profile.css'));
copyFileSync(resolve(root, 'style/admin.css'), resolve(out, 'admin.css'));
console.log(`widget and admin page bundles written to ${out}${minify ? ' (minified)' : ''}`);
