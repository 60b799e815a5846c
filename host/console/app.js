// The console's shell: sign-in, the navigation, and one view at a time.
//
// A view is a module exporting `mount(main)`, which renders into `main` and returns a
// function that stops whatever it keeps running (polling, a live tail).

import * as api from './api.js';
import { el, field, problem, replace } from './dom.js';
import * as projectors from './projectors.js';
import * as deploy from './deploy.js';
import * as events from './events.js';
import * as queryView from './query.js';
import * as deadLetters from './dead-letters.js';
import * as health from './health.js';

const VIEWS = {
  projectors: { title: 'Projectors', module: projectors },
  deploy: { title: 'Deploy', module: deploy },
  events: { title: 'Events', module: events },
  query: { title: 'Query', module: queryView },
  'dead-letters': { title: 'Dead letters', module: deadLetters },
  health: { title: 'Health', module: health },
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signOut = document.getElementById('sign-out');
const banner = document.getElementById('banner');

let unmount = null;
let signInMessage = null;

function stop() {
  if (unmount) unmount();
  unmount = null;
}

/** Shows or hides the banner for problems that concern every view (a host that is down). */
export function showBanner(message) {
  banner.hidden = !message;
  banner.textContent = message || '';
}

function currentView() {
  const name = location.hash.replace(/^#\/?/, '').split('?')[0];
  return VIEWS[name] ? name : 'projectors';
}

function render() {
  stop();
  if (!api.token()) {
    renderSignIn();
    return;
  }
  nav.hidden = false;
  signOut.hidden = false;
  const name = currentView();
  for (const link of nav.querySelectorAll('a')) {
    if (link.getAttribute('href') === `#/${name}`) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  document.title = `${VIEWS[name].title} · Refract console`;
  main.replaceChildren();
  unmount = VIEWS[name].module.mount(main, { showBanner });
}

function renderSignIn() {
  nav.hidden = true;
  signOut.hidden = true;
  showBanner('');
  document.title = 'Sign in · Refract console';
  const input = el('input', {
    type: 'password',
    id: 'token',
    name: 'token',
    required: true,
    attrs: { autocomplete: 'off', spellcheck: 'false' },
  });
  const status = el('div', { id: 'sign-in-status' }, signInMessage ? problem(signInMessage) : null);
  const button = el('button', { type: 'submit' }, 'Sign in');
  const form = el(
    'form',
    { id: 'sign-in-form', on: { submit: (event) => signIn(event, input, status, button) } },
    field('API token', input, 'The file `token` in the host\u2019s data directory (refract-data/token).'),
    button,
  );
  replace(
    main,
    el(
      'section',
      { id: 'sign-in', className: 'narrow' },
      el('h1', {}, 'Sign in'),
      el('p', {}, 'The console uses the host\u2019s HTTP API with its bearer token. The token stays in this tab only and is forgotten when the tab closes.'),
      form,
      status,
    ),
  );
  input.focus();
}

async function signIn(event, input, status, button) {
  event.preventDefault();
  const secret = input.value.trim();
  if (!secret) {
    replace(status, problem('Paste the API token first.'));
    return;
  }
  button.disabled = true;
  replace(status, el('p', { className: 'muted' }, 'Checking the token\u2026'));
  api.setToken(secret);
  try {
    // Any authenticated call proves the token; this one is cheap.
    await api.get('/v1/projectors');
    signInMessage = null;
    input.value = '';
    render();
  } catch (error) {
    api.clearToken();
    button.disabled = false;
    const message = error.kind === 'unauthorized' ? error.message : `Cannot sign in: ${error.message}`;
    signInMessage = message;
    replace(status, problem(message));
  }
}

api.onUnauthorized((error) => {
  signInMessage = error.message;
  render();
});

signOut.addEventListener('click', () => {
  api.clearToken();
  signInMessage = null;
  render();
});

// In-page anchors (the skip link's `#main`) are not views.
window.addEventListener('hashchange', () => location.hash !== '#main' && render());
render();
