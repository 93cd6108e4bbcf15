"""A new key's one showing, in a widget whose state never holds it.

A notebook keeps every output and, when the front end saves widget state, every
synced trait. So the raw key is neither: the widget's traits hold the key's id,
name and hint; its view, once rendered, asks the kernel for the key with a
custom message, and the kernel answers with the key as a binary buffer of a
custom message - a path that no front end and no headless executor saves.
The kernel keeps the key in a closure for ``seconds`` only; a view that asks
later is told it is gone.

The output's text fallback (what a front end without widgets, or a notebook
viewer, shows) says how to get a key where no widget can show it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import anywidget
import traitlets as t

_ESM = """
function line(text) {
  const p = document.createElement('div');
  p.textContent = text;
  return p;
}

function render({ model, el }) {
  const id = model.get('key_id');
  const name = model.get('name') || '(unnamed)';
  const seconds = model.get('seconds');
  const box = document.createElement('div');
  box.className = 'lumen-new-key';
  box.style.cssText = 'border-left:3px solid var(--jp-warn-color1,#f57c00);padding:4px 8px';
  box.appendChild(line(`New API key '${name}' (id ${id}):`));
  const status = line('Fetching the key from the kernel…');
  box.appendChild(status);
  el.appendChild(box);
  let timer = null;
  const gone = `API key '${name}' (id ${id}, ${model.get('hint')}) was created. It was shown ` +
    'once and is not stored in this notebook; if you did not copy it, revoke it with ' +
    `%lumen keys revoke ${id} and create another.`;
  const onMessage = (content, buffers) => {
    if (!content || content.type === undefined) return;
    if (content.type === 'key' && buffers && buffers.length) {
      const key = new TextDecoder().decode(buffers[0]);
      const input = document.createElement('input');
      input.type = 'text';
      input.readOnly = true;
      input.size = 52;
      input.value = key;
      input.style.fontFamily = 'monospace';
      input.addEventListener('click', () => input.select());
      const copy = document.createElement('button');
      copy.textContent = 'Copy';
      copy.addEventListener('click', () => {
        navigator.clipboard.writeText(key);
        copy.textContent = 'Copied';
      });
      status.replaceChildren(input, document.createTextNode(' '), copy);
      box.appendChild(line('Copy it now: it is shown here only, never saved in the notebook.'));
      if (seconds > 0) {
        timer = setTimeout(() => box.replaceChildren(line(gone)), seconds * 1000);
      }
    } else if (content.type === 'gone') {
      box.replaceChildren(line(gone));
    }
  };
  model.on('msg:custom', onMessage);
  model.send({ type: 'reveal' });
  return () => {
    model.off('msg:custom', onMessage);
    if (timer !== null) clearTimeout(timer);
  };
}

export default { render };
"""


def fallback_text(created: Mapping[str, Any]) -> str:
    """What is saved as the output's text: everything but the key."""
    name = created.get("name") or "(unnamed)"
    key_id = created.get("id")
    return (
        f"API key '{name}' (id {key_id}, {created.get('hint')}) was created. Its value is "
        "shown once, in the widget view only, and never saved in this notebook. If no widget "
        f"shows it here, revoke it with `%lumen keys revoke {key_id}` and run "
        "`%lumen keys new NAME --save FILE` (the key is written to FILE, readable by you only)."
    )


class NewKey(anywidget.AnyWidget):
    """Shows a new key in its view; the key travels only in a custom message."""

    _esm = _ESM
    key_id = t.Int(0).tag(sync=True)
    name = t.Unicode("").tag(sync=True)
    hint = t.Unicode("").tag(sync=True)
    seconds = t.Float(60.0).tag(sync=True)

    def __init__(
        self,
        created: Mapping[str, Any],
        raw: str,
        seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            key_id=int(created.get("id") or 0),
            name=str(created.get("name") or ""),
            hint=str(created.get("hint") or ""),
            seconds=float(seconds),
        )
        self._fallback = fallback_text(created)
        held = [raw.encode("utf-8")]
        deadline = clock() + seconds if seconds > 0 else float("inf")

        def forget() -> None:
            held.clear()

        def on_message(_widget: Any, content: Any, _buffers: Any) -> None:
            if not isinstance(content, dict) or content.get("type") != "reveal":
                return
            if held and clock() < deadline:
                self.send({"type": "key"}, [held[0]])
            else:
                forget()
                self.send({"type": "gone"})

        self.on_msg(on_message)
        self._forget: Callable[[], None] = forget
        if seconds > 0:
            timer = threading.Timer(seconds, forget)
            timer.daemon = True
            timer.start()

    def forget(self) -> None:
        """Drop the key now: later views are told it is gone."""
        self._forget()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        return {**data, "text/plain": self._fallback}, metadata

    def __repr__(self) -> str:
        return f"<new API key {self.name!r} (id {self.key_id}, {self.hint})>"
