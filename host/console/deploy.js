// Deploy: upload a component, watch its shadow replay race to lag zero, read the diff
// against the active version, then promote, abort or roll back. Deploys made from the
// plugins folder or the CLI show up here the same way: the page follows the API's
// projector list, not its own uploads.

import * as api from './api.js';
import { confirmAction, count, duration, el, field, problem, rate, repeat, replace, replaceKeepingFocus, table } from './dom.js';
import { stateOf } from './projectors.js';

/** How often a caught-up shadow's diff is fetched again while its checkpoint moves. */
const DIFF_REFRESH_MS = 5000;

export function mount(main, { showBanner }) {
  const names = el('datalist', { id: 'projector-names' });
  const nameInput = el('input', {
    type: 'text',
    id: 'deploy-name',
    required: true,
    attrs: { list: 'projector-names', pattern: '[a-z0-9_\\-]{1,64}', autocomplete: 'off', spellcheck: 'false' },
  });
  const fileInput = el('input', { type: 'file', id: 'deploy-file', required: true, attrs: { accept: '.wasm,application/wasm' } });
  const uploadButton = el('button', { type: 'submit', id: 'deploy-upload' }, 'Upload and deploy');
  const outcome = el('div', { id: 'deploy-outcome', attrs: { 'aria-live': 'polite' } });
  const cards = el('div', { id: 'deploy-cards' }, el('p', { className: 'muted' }, 'Loading\u2026'));
  const diffs = new Map();

  const form = el(
    'form',
    { id: 'deploy-form', className: 'inline-form', on: { submit: (event) => upload(event) } },
    field('Projector', nameInput, 'The name the component declares.'),
    field('Component (.wasm)', fileInput),
    uploadButton,
    names,
  );

  async function upload(event) {
    event.preventDefault();
    const file = fileInput.files[0];
    const name = nameInput.value.trim();
    if (!file || !name) {
      replace(outcome, problem('Choose the projector\u2019s name and a .wasm file.'));
      return;
    }
    uploadButton.disabled = true;
    replace(outcome, el('p', { className: 'muted' }, `Uploading ${file.name} (${count(file.size)} bytes); the host validates and compiles it\u2026`));
    try {
      const deployment = await api.call('POST', `/v1/projectors/${encodeURIComponent(name)}/versions`, {
        body: file,
        contentType: 'application/wasm',
      });
      const said = {
        started: `Deployed ${deployment.projector} version ${deployment.version}: it is replaying the log into a shadow read model.`,
        'already-active': `${deployment.projector} version ${deployment.version} is already the active version: nothing to do.`,
        'already-deploying': `${deployment.projector} version ${deployment.version} is already replaying: nothing to do.`,
      }[deployment.outcome];
      replace(outcome, el('p', { className: 'ok', id: 'deploy-result' }, said ?? `Deployed: ${deployment.outcome}`));
      fileInput.value = '';
      await refresh();
    } catch (error) {
      replace(outcome, problem(error.kind === 'refused' ? `The host refused the deploy (${error.status} ${error.code}): ${error.message}` : error.message));
    } finally {
      uploadButton.disabled = false;
    }
  }

  async function refresh() {
    try {
      const { projectors } = await api.get('/v1/projectors');
      showBanner('');
      replace(names, projectors.map((projector) => el('option', { value: projector.name })));
      if (!nameInput.value && projectors.length === 1) nameInput.value = projectors[0].name;
      const shown = projectors.map((projector) => card(projector, diffs, refresh, outcome)).filter(Boolean);
      replaceKeepingFocus(
        cards,
        shown.length ? shown : el('p', {}, 'No deploy in progress, and no previous version to roll back to.'),
      );
    } catch (error) {
      if (error.kind === 'unreachable') showBanner(error.message);
      else if (error.kind !== 'unauthorized') replace(cards, problem(error.message));
    }
  }

  replace(
    main,
    el('h1', {}, 'Deploy'),
    el('section', { className: 'panel' }, el('h2', {}, 'Upload a new version'), form, outcome),
    el('section', {}, el('h2', {}, 'Deploys and rollbacks'), cards),
  );
  return repeat(refresh);
}

/** The card of one projector with a shadow, a failed shadow or a previous version; null otherwise. */
function card(projector, diffs, refresh, outcome) {
  const find = (role) => projector.versions.find((version) => version.role === role);
  const active = find('active');
  const shadow = find('shadow');
  const previous = find('previous');
  const failed = projector.versions.filter((version) => version.role === 'failed');
  if (!shadow && !previous && failed.length === 0) return null;

  const name = projector.name;
  const parts = [
    el(
      'h3',
      {},
      name,
      ': ',
      shadow
        ? `shadow ${shadow.version} replacing active ${active?.version ?? '(none)'}`
        : `active ${active?.version ?? '(none)'}`,
    ),
  ];
  for (const version of failed) {
    parts.push(problem(`Version ${version.version} failed and was dropped; the active version is untouched. ${version.status?.last_error ?? ''}`.trim()));
  }

  let caughtUp = false;
  if (shadow) {
    const status = shadow.status;
    const replay = shadow.replay;
    const lag = status ? Math.max(0, status.head - status.checkpoint) : null;
    caughtUp = Boolean(status) && stateOf(shadow) === 'live' && lag === 0 && status.checkpoint >= (active?.status?.checkpoint ?? 0);
    const percent = replay ? Math.min(100, replay.percent) : 0;
    const progress = el('progress', {
      max: 100,
      value: percent,
      attrs: { 'aria-label': `replay of ${name} version ${shadow.version}` },
    });
    const summary = caughtUp
      ? `Caught up: lag 0 at offset ${count(status.checkpoint)}. The shadow keeps tailing the log until it is promoted.`
      : replay
        ? `Replaying: ${count(replay.done)} of ${count(replay.total)} events (${percent.toFixed(0)}%), lag ${count(lag)} \u00b7 ${rate(replay.events_per_second)} events/s \u00b7 ETA ${duration(replay.eta_seconds)}`
        : `Starting (${stateOf(shadow)})`;
    parts.push(
      el('div', { className: 'progress' }, progress, el('p', { className: 'progress-text' }, summary)),
    );
    if (status?.last_error) {
      parts.push(problem(`Shadow ${shadow.version}: ${status.last_error}`));
    }
    if (stateOf(shadow).startsWith('stalled') || stateOf(shadow).startsWith('failed')) {
      parts.push(problem(`The shadow is ${stateOf(shadow)}`));
    }
    if (caughtUp && active) {
      parts.push(diffView(name, shadow.version, shadow.status?.checkpoint ?? 0, diffs, 'Diff of the shadow against the active version'));
    }
  } else if (previous && active) {
    parts.push(diffView(name, previous.version, active.status?.checkpoint ?? 0, diffs, `What changed with the last swap: the previous version against the active one`));
  }

  const buttons = [];
  if (shadow) {
    buttons.push(
      button(name, 'Promote', 'promote', !caughtUp, () =>
        act(name, 'promote', {
          title: `Promote ${name} version ${shadow.version}?`,
          message: [
            `Version ${shadow.version} becomes the active version of ${name} and serves every query from now on, at offset ${count(shadow.status?.checkpoint)}.`,
            active ? `The active version ${active.version} becomes the previous version: Rollback brings it back.` : null,
          ].filter(Boolean),
          confirmLabel: `Promote ${shadow.version}`,
          done: (changed) => `Promoted: ${name} version ${changed.version} is now active.`,
        }),
      ),
      button(name, 'Abort', 'abort', false, () =>
        act(name, 'abort', {
          title: `Abort the deploy of ${name} version ${shadow.version}?`,
          message: [
            `The shadow ${shadow.version} stops and its read model is deleted.`,
            active ? `The active version ${active.version} keeps serving; readers see no change.` : null,
          ].filter(Boolean),
          confirmLabel: `Abort ${shadow.version}`,
          done: (changed) => `Aborted: ${name} version ${changed.version} was dropped.`,
        }),
      ),
    );
  }
  if (previous) {
    buttons.push(
      button(name, `Roll back to ${previous.version}`, 'rollback', false, () =>
        act(name, 'rollback', {
          title: `Roll ${name} back to version ${previous.version}?`,
          message: [
            `Version ${previous.version} becomes the active version of ${name} again: at once if it was kept warm, otherwise once it has caught up with the log.`,
            active ? `The active version ${active.version} stops serving.` : null,
            shadow ? `The running shadow ${shadow.version} is dropped.` : null,
          ].filter(Boolean),
          confirmLabel: `Roll back to ${previous.version}`,
          done: (changed) => `Rolling back: ${name} version ${changed.version} is, or will shortly be, active again.`,
        }),
      ),
    );
  }
  parts.push(el('div', { className: 'actions' }, buttons));

  async function act(projectorName, action, { title, message, confirmLabel, done }) {
    if (!(await confirmAction({ title, message, confirmLabel }))) return;
    try {
      const changed = await api.call('POST', `/v1/projectors/${encodeURIComponent(projectorName)}/${action}`);
      replace(outcome, el('p', { className: 'ok', id: 'deploy-result' }, done(changed)));
    } catch (error) {
      replace(outcome, problem(error.kind === 'refused' ? `The host refused to ${action} (${error.status} ${error.code}): ${error.message}` : error.message));
    }
    await refresh();
  }

  return el('section', { className: 'card', attrs: { 'data-projector': name } }, parts);
}

function button(projector, label, action, disabled, onClick) {
  return el(
    'button',
    {
      type: 'button',
      disabled,
      className: action === 'promote' ? '' : 'secondary',
      attrs: { 'data-action': action, 'data-key': `${projector}/${action}` },
      on: { click: onClick },
    },
    label,
  );
}

/**
 * The diff of version `other` of `name` against the active version. Fetched when first
 * shown, then again (at most every DIFF_REFRESH_MS) while `checkpoint` moves; the last
 * answer is shown meanwhile.
 */
function diffView(name, other, checkpoint, diffs, title) {
  const key = `${name}/${other}`;
  let entry = diffs.get(key);
  const stale = !entry || (entry.checkpoint !== checkpoint && Date.now() - entry.fetchedAt > DIFF_REFRESH_MS);
  if (stale && !entry?.loading) {
    entry = { ...(entry ?? {}), loading: true, checkpoint, fetchedAt: Date.now() };
    const asked = entry;
    diffs.set(key, asked);
    api
      .get(`/v1/projectors/${encodeURIComponent(name)}/diff${api.query({ version: other, sample: 5 })}`)
      .then((answer) => diffs.set(key, { ...asked, loading: false, answer, error: null }))
      .catch((error) => diffs.set(key, { ...asked, loading: false, error }));
  }
  const container = el('div', { className: 'diff' }, el('h4', {}, title));
  if (entry.error) {
    container.append(problem(`Cannot compare: ${entry.error.message}`));
  } else if (!entry.answer) {
    container.append(el('p', { className: 'muted' }, 'Comparing the read models\u2026'));
  } else {
    container.append(...renderDiff(entry.answer));
  }
  return container;
}

function renderDiff(diff) {
  const base = `${diff.base.role} ${diff.base.version}`;
  const other = `${diff.other.role} ${diff.other.version}`;
  const short = (checksum) => (checksum ? checksum.slice(0, 12) : '(no table)');
  const rows = diff.tables.map((t) => {
    const verdict = t.schema_differs ? 'columns differ' : t.base_checksum && t.base_checksum === t.other_checksum ? 'same' : 'differs';
    return el(
      'tr',
      { className: verdict === 'same' ? '' : 'changed', attrs: { 'data-table': t.table } },
      [t.table, count(t.base_rows), count(t.other_rows), el('code', {}, short(t.base_checksum)), el('code', {}, short(t.other_checksum)), verdict].map((cell) =>
        el('td', {}, cell),
      ),
    );
  });
  const parts = [
    table(['Table', `Rows (${base})`, `Rows (${other})`, `Checksum (${base})`, `Checksum (${other})`, 'Content'], rows, { className: 'diff-tables' }),
  ];
  for (const t of diff.tables) {
    if (t.only_in_base.length === 0 && t.only_in_other.length === 0) continue;
    parts.push(
      el(
        'div',
        { className: 'samples', attrs: { 'data-table': t.table } },
        el('h5', {}, `${t.table}: sample differing rows`),
        el(
          'ul',
          {},
          t.only_in_base.map((row) => el('li', { className: 'only-base' }, el('span', { className: 'side' }, `only in ${base}: `), el('code', {}, `(${row.join(', ')})`))),
          t.only_in_other.map((row) => el('li', { className: 'only-other' }, el('span', { className: 'side' }, `only in ${other}: `), el('code', {}, `(${row.join(', ')})`))),
        ),
      ),
    );
  }
  if (diff.gate) {
    parts.push(
      el(
        'p',
        { className: diff.gate.passed ? 'ok gate' : 'problem gate', id: 'diff-gate' },
        diff.gate.passed ? `Diff gate ${diff.gate.file}: passed.` : `Diff gate ${diff.gate.file}: refused. ${diff.gate.reason}`,
      ),
    );
  } else {
    parts.push(el('p', { className: 'muted gate' }, 'No diff gate is configured for this projector.'));
  }
  return parts;
}
