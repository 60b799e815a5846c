// Events: the log through `GET /v1/events` with its filters, paged by offset, with a
// live tail (`GET /v1/events/subscribe`) and one event's JSON.

import * as api from './api.js';
import { el, eventJson, field, problem, replace, table } from './dom.js';

/** Events per page unless the person picks another size. */
const PAGE_SIZE = 50;

/** Rows the live tail keeps on the page; older ones scroll away. */
const TAIL_ROWS = 500;

/** Characters of an event's data shown in the table; the whole event is one click away. */
const PREVIEW_CHARS = 120;

export function mount(main, { showBanner }) {
  const input = (id, placeholder, type = 'text') =>
    el('input', { type, id, attrs: { placeholder, autocomplete: 'off', spellcheck: 'false' } });
  const inputs = {
    from_offset: input('ev-from-offset', '1', 'number'),
    from_time: input('ev-from-time', '2026-01-31T12:00:00Z'),
    until_time: input('ev-until-time', '2026-02-01T00:00:00Z'),
    type: input('ev-type', 'car.sold'),
    stream: input('ev-stream', 'hrxs21'),
    stream_prefix: input('ev-stream-prefix', 'account-'),
    limit: input('ev-limit', String(PAGE_SIZE), 'number'),
  };
  inputs.from_offset.min = '1';
  inputs.limit.min = '1';
  const applyButton = el('button', { type: 'submit', id: 'ev-apply' }, 'Show events');
  const previousButton = el('button', { type: 'button', className: 'secondary', id: 'ev-previous', disabled: true }, '\u2190 Previous page');
  const nextButton = el('button', { type: 'button', className: 'secondary', id: 'ev-next', disabled: true }, 'Next page \u2192');
  const tail = el('input', { type: 'checkbox', id: 'ev-tail' });
  const status = el('div', { id: 'ev-status', attrs: { 'aria-live': 'polite' } });
  const results = el('div', { id: 'ev-results' });
  const detail = el('pre', { id: 'event-json', className: 'json', tabIndex: 0, attrs: { 'aria-label': 'the selected event as JSON' } });
  const detailSection = el('section', { className: 'detail', hidden: true }, el('h2', {}, 'Event'), detail);

  let starts = []; // from_offset of each page before this one
  let current = 1;
  let next = null;
  let tailing = null; // AbortController of the live tail
  let shown = [];

  const filters = () => {
    const chosen = {};
    for (const key of ['from_time', 'until_time', 'type', 'stream', 'stream_prefix']) {
      chosen[key] = inputs[key].value;
    }
    return chosen;
  };
  const pageSize = () => Math.max(1, Number(inputs.limit.value) || PAGE_SIZE);

  async function load(fromOffset) {
    try {
      const page = await api.get(`/v1/events${api.query({ ...filters(), from_offset: fromOffset, limit: pageSize() })}`);
      showBanner('');
      current = fromOffset;
      next = page.next_from_offset;
      shown = page.events;
      renderRows();
      previousButton.disabled = starts.length === 0;
      nextButton.disabled = next === null;
      const first = page.events[0]?.offset;
      const last = page.events.at(-1)?.offset;
      replace(
        status,
        el(
          'p',
          { className: 'muted' },
          page.events.length === 0
            ? next === null
              ? 'No events match.'
              : `No match in this stretch of the log (from offset ${fromOffset} to ${next - 1}); Next looks further.`
            : `Offsets ${first} to ${last}${next === null ? ' (the end of the log as of now)' : ''}.`,
        ),
      );
    } catch (error) {
      if (error.kind === 'unreachable') showBanner(error.message);
      else if (error.kind !== 'unauthorized') replace(status, problem(error.message));
    }
  }

  function renderRows() {
    const rows = shown.map((event) => {
      const data = JSON.stringify(event.data);
      const preview = data.length > PREVIEW_CHARS ? `${data.slice(0, PREVIEW_CHARS)}\u2026` : data;
      const show = el(
        'button',
        { type: 'button', className: 'link', attrs: { 'data-offset': event.offset, 'aria-label': `show event ${event.offset}` }, on: { click: () => select(event) } },
        String(event.offset),
      );
      return el(
        'tr',
        { attrs: { 'data-offset': event.offset } },
        [show, event.recorded_at, event.stream, event.type, el('code', {}, preview)].map((cell) => el('td', {}, cell)),
      );
    });
    replace(results, table(['Offset', 'Recorded at', 'Stream', 'Type', 'Data'], rows, { className: 'events' }));
  }

  function select(event) {
    detail.textContent = eventJson(event);
    detailSection.hidden = false;
    detail.focus();
  }

  async function startTail() {
    stopTail();
    const controller = new AbortController();
    tailing = controller;
    previousButton.disabled = true;
    nextButton.disabled = true;
    applyButton.disabled = true;
    try {
      // The head, not the count: once retention has removed events, the two part.
      const { head } = await api.get('/v1/events/count');
      replace(status, el('p', { className: 'live' }, `Live: following the log from offset ${head + 1}.`));
      await api.subscribe({ ...filters(), from_offset: head + 1 }, (event) => {
        shown.push(event);
        if (shown.length > TAIL_ROWS) shown.splice(0, shown.length - TAIL_ROWS);
        renderRows();
      }, controller.signal);
      if (tailing === controller) replace(status, problem('The live tail ended: the host closed the stream.'));
    } catch (error) {
      if (error.name === 'AbortError') return;
      if (error.kind === 'unreachable') showBanner(error.message);
      replace(status, problem(`The live tail stopped: ${error.message}`));
    } finally {
      if (tailing === controller) {
        tailing = null;
        tail.checked = false;
        applyButton.disabled = false;
      }
    }
  }

  function stopTail() {
    if (tailing) tailing.abort();
    tailing = null;
    applyButton.disabled = false;
    previousButton.disabled = starts.length === 0;
    nextButton.disabled = next === null;
  }

  const form = el(
    'form',
    {
      id: 'events-form',
      className: 'filters',
      on: {
        submit: (event) => {
          event.preventDefault();
          stopTail();
          tail.checked = false;
          starts = [];
          load(Math.max(1, Number(inputs.from_offset.value) || 1));
        },
      },
    },
    field('From offset', inputs.from_offset),
    field('From time', inputs.from_time, 'RFC 3339'),
    field('Until time', inputs.until_time, 'RFC 3339'),
    field('Type', inputs.type),
    field('Stream', inputs.stream),
    field('Stream prefix', inputs.stream_prefix),
    field('Page size', inputs.limit),
    el('div', { className: 'actions' }, applyButton),
  );
  previousButton.addEventListener('click', () => {
    if (starts.length) load(starts.pop());
  });
  nextButton.addEventListener('click', () => {
    if (next !== null) {
      starts.push(current);
      load(next);
    }
  });
  tail.addEventListener('change', () => (tail.checked ? startTail() : stopTail()));

  replace(
    main,
    el('h1', {}, 'Events'),
    form,
    el(
      'div',
      { className: 'pager' },
      previousButton,
      nextButton,
      el('label', { className: 'toggle', htmlFor: 'ev-tail' }, tail, ' Live tail'),
    ),
    status,
    el('div', { className: 'split' }, results, detailSection),
  );
  load(1);
  return () => stopTail();
}
