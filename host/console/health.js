// Health: `GET /health`, ok or degraded with its reasons, refreshed every few seconds.

import * as api from './api.js';
import { el, problem, repeat, replace } from './dom.js';

const REFRESH_MS = 3000;

export function mount(main, { showBanner }) {
  const body = el('div', { id: 'health-body', attrs: { 'aria-live': 'polite' } }, el('p', { className: 'muted' }, 'Asking the host\u2026'));
  replace(main, el('h1', {}, 'Health'), body);
  return repeat(async () => {
    try {
      const health = await api.health();
      showBanner('');
      const ok = health.status === 'ok';
      const reasons = Array.isArray(health.reasons) ? health.reasons : [];
      replace(
        body,
        el('p', { className: ok ? 'health ok' : 'health bad', id: 'health-status' }, ok ? 'ok' : String(health.status)),
        reasons.length === 0
          ? el('p', {}, ok ? 'Every projector is live or catching up within the lag limit, and every plugin file loaded.' : '')
          : el('ul', { className: 'reasons' }, reasons.map((reason) => el('li', {}, describe(reason)))),
      );
    } catch (error) {
      if (error.kind === 'unreachable') showBanner(error.message);
      else if (error.kind !== 'unauthorized') replace(body, problem(error.message));
    }
  }, REFRESH_MS);
}

/** A reason as text: a sentence, or an object with a `message`. */
function describe(reason) {
  if (typeof reason === 'string') return reason;
  return typeof reason?.message === 'string' ? reason.message : JSON.stringify(reason);
}
