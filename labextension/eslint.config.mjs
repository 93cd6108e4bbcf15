// ESLint for the front end: the recommended JavaScript and TypeScript rules, with the
// layout left to Prettier (eslint-config-prettier turns off the rules that would clash).
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import { defineConfig, globalIgnores } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default defineConfig(
  // Build output and installed packages. The Lab extension and the widget bundles are
  // written outside this folder (../lumen_jupyter), so `eslint .` never reaches them.
  globalIgnores(['lib/', 'node_modules/', '.yarn/']),
  js.configs.recommended,
  tseslint.configs.recommended,
  prettier,
  {
    rules: {
      eqeqeq: ['error', 'smart'],
      // Warnings and errors are how the extension reports a failure it survives;
      // anything else on the console is left over from debugging.
      'no-console': ['error', { allow: ['warn', 'error'] }],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }
      ]
    }
  },
  {
    files: ['src/**/*.ts', 'test/**/*.ts'],
    languageOptions: { globals: globals.browser }
  },
  {
    // The build and test scripts run in node and report what they did on the console.
    files: ['scripts/**/*.mjs', '*.mjs'],
    languageOptions: { globals: globals.node },
    rules: { 'no-console': 'off' }
  },
  {
    files: ['test/**/*.ts'],
    languageOptions: { globals: globals.node }
  }
);
