// Dead letters: the events a projector skipped under `on_poison = "skip"`, each with
// the error and, one click away, the event itself.

import * as api from './api.js';
import { el, eventJson, field, problem, replace, table } from './dom.js';

/** Dead letters listed per projector. */
const LIMIT = 200;

export function mount(main, { showBanner }) {
  const projector = el('select', { id: 'dl-projector' });
  const list = el('div', { id: 'dl-list', attrs: { 'aria-live': 'polite' } });
  const detail = el('pre', { id: 'dl-event', className: 'json', tabIndex: 0, attrs: { 'aria-label': 'the dead-lettered event as JSON' } });
  const detailSection = el('section', { className: 'detail', hidden: true }, el('h2', {}, 'Event'), detail);

  const fail = (error) => {
    if (error.kind === 'unreachable') showBanner(error.message);
    else if (error.kind !== 'unauthorized') replace(list, problem(error.message));
  };

  async function load() {
    detailSection.hidden = true;
    if (!projector.value) return;
    try {
      const name = projector.value;
      const { dead_letters: letters } = await api.get(`/v1/projectors/${encodeURIComponent(name)}/dead-letters${api.query({ limit: LIMIT })}`);
      showBanner('');
      const rows = letters.map((letter) => [
        el(
          'button',
          { type: 'button', className: 'link', attrs: { 'data-offset': letter.offset, 'aria-label': `show event ${letter.offset}` }, on: { click: () => show(letter.offset) } },
          String(letter.offset),
        ),
        el('code', {}, letter.version),
        el('span', { className: 'error-text' }, letter.error),
        letter.recorded_at,
      ]);
      replace(
        list,
        letters.length === 0
          ? el('p', {}, `${name} has no dead letters.`)
          : table(['Offset', 'Version', 'Error', 'Recorded at'], rows, { className: 'dead-letters', caption: `${letters.length} dead letter${letters.length === 1 ? '' : 's'} of ${name}, oldest first` }),
      );
    } catch (error) {
      fail(error);
    }
  }

  async function show(offset) {
    try {
      const { events } = await api.get(`/v1/events${api.query({ from_offset: offset, limit: 1 })}`);
      const event = events[0];
      detail.textContent = event && event.offset === offset ? eventJson(event) : `Event ${offset} is not in the log.`;
      detailSection.hidden = false;
      detail.focus();
    } catch (error) {
      fail(error);
    }
  }

  projector.addEventListener('change', load);
  replace(
    main,
    el('h1', {}, 'Dead letters'),
    el('p', { className: 'muted' }, 'Events a projector skipped because it could not apply them (on_poison = "skip").'),
    field('Projector', projector),
    el('div', { className: 'split' }, list, detailSection),
  );
  api
    .get('/v1/projectors')
    .then(({ projectors }) => {
      replace(projector, projectors.map((p) => el('option', { value: p.name }, p.name)));
      const withLetters = projectors.find((p) => p.versions.some((v) => (v.status?.dead_letters ?? 0) > 0));
      if (withLetters) projector.value = withLetters.name;
      return load();
    })
    .catch(fail);
  return () => {};
}
