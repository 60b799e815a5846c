// Projectors: every version of every projector, refreshed once a second.

import * as api from './api.js';
import { count, el, problem, rate, repeat, replace, sparkline, table } from './dom.js';

/** Samples of events/s kept per version for the sparkline: a minute at one per second. */
const HISTORY = 60;
const history = new Map();

function remember(key, value) {
  const samples = history.get(key) ?? [];
  samples.push(value);
  if (samples.length > HISTORY) samples.shift();
  history.set(key, samples);
  return samples;
}

/** Whether a version needs a person: stalled, failed, or a failed shadow. */
export function isBad(version) {
  const state = version.status?.state ?? '';
  return version.role === 'failed' || state.startsWith('stalled') || state.startsWith('failed');
}

/** The state to show: the live one, or `stopped` for a version no worker runs. */
export function stateOf(version) {
  return version.status?.state ?? 'stopped';
}

export function mount(main, { showBanner }) {
  const body = el('div', { id: 'projectors-body' }, el('p', { className: 'muted' }, 'Loading\u2026'));
  replace(
    main,
    el('h1', {}, 'Projectors'),
    el('p', { className: 'muted' }, 'Every version of every projector, updated every second.'),
    body,
  );
  return repeat(async () => {
    try {
      const answer = await api.get('/v1/projectors');
      showBanner('');
      replace(body, render(answer));
    } catch (error) {
      if (error.kind === 'unreachable') showBanner(error.message);
      else if (error.kind !== 'unauthorized') replace(body, problem(error.message));
    }
  });
}

function render({ projectors, rejected }) {
  const sections = projectors.map((projector) => {
    const rows = projector.versions.map((version) => versionRow(projector, version));
    return el(
      'section',
      { className: 'projector', attrs: { 'data-projector': projector.name } },
      el(
        'h2',
        {},
        projector.name,
        ' ',
        el('span', { className: 'muted' }, projector.active_version ? `active ${projector.active_version}` : 'no active version yet'),
      ),
      table(
        ['Version', 'Role', 'State', 'Checkpoint', 'Head', 'Lag', 'Events/s', 'Trend', 'Dead letters', 'Last error'],
        rows,
        { className: 'versions' },
      ),
    );
  });
  return [
    projectors.length === 0
      ? el('p', {}, 'No projectors yet. Drop a component into the plugins folder, run `refract deploy`, or upload one on the Deploy page.')
      : sections,
    rejected.length === 0
      ? null
      : el(
          'section',
          { className: 'rejected' },
          el('h2', {}, 'Refused plugin files'),
          table(['File', 'Why'], rejected.map((file) => [file.path, file.reason]), { className: 'bad-table' }),
        ),
  ];
}

function versionRow(projector, version) {
  const status = version.status;
  const key = `${projector.name}/${version.version}`;
  const samples = status ? remember(key, status.events_per_second) : [];
  const bad = isBad(version);
  const state = stateOf(version);
  const lag = status ? Math.max(0, status.head - status.checkpoint) : null;
  const cells = [
    el('code', {}, version.version),
    el('span', { className: `role role-${version.role}` }, version.role),
    // The badge names the state (`stalled at 34`); its message is the last error.
    el('span', { className: bad ? 'badge bad' : `badge state-${state.split(' ')[0]}`, title: state }, state.split(':')[0]),
    count(status?.checkpoint),
    count(status?.head),
    count(lag),
    rate(status?.events_per_second),
    status ? sparkline(samples, { label: `events per second of ${key}, last ${samples.length} seconds` }) : '',
    count(status?.dead_letters),
    status?.last_error ? el('span', { className: 'error-text' }, status.last_error) : '',
  ];
  return el(
    'tr',
    { className: bad ? 'bad' : '', attrs: { 'data-version': version.version, 'data-role': version.role } },
    cells.map((cell) => el('td', {}, cell)),
  );
}
