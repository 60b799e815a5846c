// Query: one read-only SQL statement against a projector's active read model, through
// `POST /v1/projectors/{name}/query`. The answer says which checkpoint (log offset)
// the rows reflect and which version answered.

import * as api from './api.js';
import { count, el, field, problem, replace, table } from './dom.js';

export function mount(main, { showBanner }) {
  const projector = el('select', { id: 'q-projector', required: true });
  const sql = el('textarea', {
    id: 'q-sql',
    rows: 5,
    required: true,
    attrs: { spellcheck: 'false', placeholder: 'SELECT * FROM cars LIMIT 20' },
  });
  const run = el('button', { type: 'submit', id: 'q-run' }, 'Run query');
  const results = el('div', { id: 'q-results', attrs: { 'aria-live': 'polite' } });

  async function execute(event) {
    event?.preventDefault();
    if (!projector.value || !sql.value.trim()) {
      replace(results, problem('Pick a projector and write a SELECT statement.'));
      return;
    }
    run.disabled = true;
    try {
      const answer = await api.postJson(`/v1/projectors/${encodeURIComponent(projector.value)}/query`, { sql: sql.value, params: [] });
      showBanner('');
      const rows = answer.rows.map((row) => row.map(cell));
      replace(
        results,
        el(
          'p',
          { className: 'muted', id: 'q-summary' },
          `${count(answer.rows.length)} row${answer.rows.length === 1 ? '' : 's'} from ${projector.value} version ${answer.version}, reflecting the log up to checkpoint ${count(answer.checkpoint)}.`,
          answer.truncated ? ' The answer was cut at the host\u2019s row or size cap; narrow the query.' : '',
        ),
        table(answer.columns, rows, { className: 'results' }),
      );
    } catch (error) {
      if (error.kind === 'unreachable') showBanner(error.message);
      replace(results, problem(error.kind === 'refused' ? `The host refused the query (${error.status} ${error.code}): ${error.message}` : error.message));
    } finally {
      run.disabled = false;
    }
  }

  sql.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) execute(event);
  });

  replace(
    main,
    el('h1', {}, 'Query'),
    el('p', { className: 'muted' }, 'Read-only SQL on a projector\u2019s active read model. Ctrl+Enter runs it.'),
    el('form', { id: 'query-form', on: { submit: execute } }, field('Projector', projector), field('SQL', sql), run),
    results,
  );

  api
    .get('/v1/projectors')
    .then(({ projectors }) => {
      replace(
        projector,
        projectors.map((p) => el('option', { value: p.name, disabled: !p.active_version }, p.active_version ? p.name : `${p.name} (no active version yet)`)),
      );
    })
    .catch((error) => {
      if (error.kind === 'unreachable') showBanner(error.message);
      else if (error.kind !== 'unauthorized') replace(results, problem(error.message));
    });
  return () => {};
}

/** A result cell as text: null shown as such, a blob as its hex. */
function cell(value) {
  if (value === null) return el('span', { className: 'null' }, 'NULL');
  if (typeof value === 'object') return el('code', {}, value.hex !== undefined ? `x'${value.hex}'` : JSON.stringify(value));
  return String(value);
}
