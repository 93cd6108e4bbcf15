/**
 * The identity half of the profile card: avatar, display name, email.
 *
 * The avatar starts as initials on a colour picked from the username; the
 * Gravatar image replaces it only once it has loaded, so a blocked or offline
 * Gravatar never shows a broken image.
 */

import { h } from './dom';
import type { UserInfo } from './types';

const HUES = [210, 265, 330, 20, 45, 140, 175, 290];

export function avatarHue(seed: string): number {
  let hash = 0;
  for (let i = 0; i < seed.length; i++) {
    hash = (hash * 31 + seed.charCodeAt(i)) >>> 0;
  }
  return HUES[hash % HUES.length];
}

export function renderAvatar(user: UserInfo): HTMLElement {
  const initials = (user.initials || user.display_name || user.username || '?').slice(0, 2);
  const avatar = h(
    'div',
    {
      class: 'lumen-avatar',
      attrs: { role: 'img', 'aria-label': `Avatar of ${user.display_name || user.username}` }
    },
    h('span', { class: 'lumen-avatar-initials', text: initials, attrs: { 'aria-hidden': 'true' } })
  );
  avatar.style.setProperty('--lumen-avatar-hue', String(avatarHue(user.username || initials)));
  if (user.email && user.avatar_url) {
    const img = h('img', {
      class: 'lumen-avatar-image',
      attrs: { alt: '', referrerpolicy: 'no-referrer', loading: 'lazy', decoding: 'async' }
    });
    img.addEventListener('load', () => {
      if (img.naturalWidth > 0) {
        avatar.classList.add('lumen-avatar-loaded');
      }
    });
    img.addEventListener('error', () => {
      avatar.classList.remove('lumen-avatar-loaded');
      img.remove();
    });
    img.src = user.avatar_url;
    avatar.appendChild(img);
  }
  return avatar;
}

export function renderProfileCard(user: UserInfo): HTMLElement {
  return h(
    'div',
    { class: 'lumen-identity' },
    renderAvatar(user),
    h(
      'div',
      { class: 'lumen-identity-text' },
      h('div', { class: 'lumen-display-name', text: user.display_name || user.username }),
      user.email
        ? h('div', { class: 'lumen-email', text: user.email })
        : h('div', { class: 'lumen-email lumen-muted', text: user.username })
    )
  );
}
