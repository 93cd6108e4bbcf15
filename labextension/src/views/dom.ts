/**
 * A tiny element builder: the views are plain DOM, written without a framework,
 * so they run the same in JupyterLab, Notebook 7, VS Code and Colab.
 *
 * Text always goes in through `textContent`, never as HTML.
 */

export type Child = Node | string | number | null | undefined | false;

export interface Props {
  class?: string;
  text?: string;
  title?: string;
  attrs?: Record<string, string | number | boolean | null | undefined>;
  dataset?: Record<string, string>;
  on?: { [E in keyof HTMLElementEventMap]?: (event: HTMLElementEventMap[E]) => void };
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props.class) {
    el.className = props.class;
  }
  if (props.text !== undefined) {
    el.textContent = props.text;
  }
  if (props.title) {
    el.title = props.title;
  }
  if (props.attrs) {
    for (const [name, value] of Object.entries(props.attrs)) {
      if (value === null || value === undefined || value === false) {
        continue;
      }
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  if (props.dataset) {
    Object.assign(el.dataset, props.dataset);
  }
  if (props.on) {
    for (const [name, handler] of Object.entries(props.on)) {
      if (handler) {
        el.addEventListener(name, handler as EventListener);
      }
    }
  }
  append(el, children);
  return el;
}

export function append(parent: Node, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Record<string, string | number> = {},
  ...children: (Node | null)[]
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child) {
      el.appendChild(child);
    }
  }
  return el;
}

/** Replace every child of `parent`. */
export function replaceChildren(parent: Element, ...children: Child[]): void {
  parent.textContent = '';
  append(parent, children);
}

let counter = 0;
/**
 * This copy of the view code's own prefix. The JupyterLab extension and the widget
 * bundle each hold a copy of this module (and a page may load the widget bundle more
 * than once): counting from 1 in each would give two views the same ids, and a label
 * of one would point into the other.
 */
const copyTag = randomTag();

function randomTag(): string {
  const bytes = new Uint8Array(4);
  if (globalThis.crypto?.getRandomValues) {
    globalThis.crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = Math.floor(Math.random() * 256);
    }
  }
  return Array.from(bytes, b => b.toString(36).padStart(2, '0')).join('');
}

/** A document-unique id for ARIA references. */
export function uid(prefix: string): string {
  counter += 1;
  return `lumen-${prefix}-${copyTag}-${counter}`;
}

/** A visually hidden text, read by screen readers. */
export function srOnly(text: string): HTMLSpanElement {
  return h('span', { class: 'lumen-sr-only', text });
}

/**
 * Run `callback` once the next frame has been painted (an animation frame, then a task):
 * work done in the frame's own callbacks would hold up its paint. Returns a cancel.
 */
export function afterPaint(callback: () => void): () => void {
  let timer: number | undefined;
  const frame = requestAnimationFrame(() => {
    timer = window.setTimeout(callback, 0);
  });
  return () => {
    cancelAnimationFrame(frame);
    window.clearTimeout(timer);
  };
}
