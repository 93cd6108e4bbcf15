/**
 * The consent dialog: a model's notice with Cancel and Accept. Accepting sends
 * the digest of the notice shown, so the server can refuse if the text changed
 * in the meantime (then the new notice is shown next time).
 */

import type { ViewContext } from './context';
import { openDialog, type DialogHandle } from './dialog';
import { h } from './dom';
import type { ModelInfo } from './types';

export function openConsentDialog(ctx: ViewContext, model: ModelInfo): DialogHandle {
  return openDialog(ctx.dialogHost, {
    title: `Notice for ${model.name}`,
    className: 'lumen-consent-dialog',
    body: [
      h(
        'p',
        { class: 'lumen-muted' },
        'This model needs a one-time acknowledgment before you can use it. If the notice changes, you will be asked again.'
      ),
      h('blockquote', {
        class: 'lumen-notice',
        text: model.notice || 'This model requires your consent before use.'
      })
    ],
    buttons: [
      { label: 'Cancel', action: () => undefined, name: 'cancel' },
      {
        label: 'Accept',
        kind: 'primary',
        name: 'accept',
        action: () => ctx.actions.consent(model.name, model.notice_digest)
      }
    ]
  });
}
