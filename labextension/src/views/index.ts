/**
 * The shared profile views: written once, used by the notebook widget
 * (src/widget.ts) and the JupyterLab panel (src/plugin.ts).
 */

export * from './types';
export * from './format';
export * from './sort';
export { ProfileView, type ProfileViewOptions } from './profileView';
