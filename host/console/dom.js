// Building the page. Every string that reaches the DOM goes through `textContent` or
// an attribute set by name: nothing here, or anywhere in the console, parses a string
// as HTML, so a projector name, an error or an event's data can never become markup.

/**
 * Creates an element. `props` sets properties by name (`className`, `type`, `value`,
 * `disabled`...), `attrs` attributes, `on` event listeners; `children` are nodes or
 * strings (strings become text nodes).
 */
export function el(tag, props = {}, ...children) {
  const { attrs = {}, on = {}, ...rest } = props;
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(rest)) {
    node[name] = value;
  }
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) {
      node.setAttribute(name, value === true ? '' : String(value));
    }
  }
  for (const [event, handler] of Object.entries(on)) {
    node.addEventListener(event, handler);
  }
  append(node, children);
  return node;
}

/** Appends children (nodes, strings, arrays of them; null and false are skipped). */
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Replaces every child of `node`. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

const SVG = 'http://www.w3.org/2000/svg';

/** A small line chart of `values` (newest last), as an SVG element. */
export function sparkline(values, { width = 96, height = 22, label = '' } = {}) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'sparkline');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  if (values.length > 1) {
    const max = Math.max(...values, 1);
    const step = width / (values.length - 1);
    const points = values
      .map((value, index) => {
        const x = (index * step).toFixed(1);
        const y = (height - 1 - (value / max) * (height - 2)).toFixed(1);
        return `${x},${y}`;
      })
      .join(' ');
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', points);
    svg.append(line);
  }
  return svg;
}

/** A number with thousands separators. */
export function count(value) {
  return value === null || value === undefined ? '—' : Number(value).toLocaleString('en-US');
}

/** Events per second, short. */
export function rate(value) {
  if (value === null || value === undefined) return '—';
  return value >= 100 ? Math.round(value).toLocaleString('en-US') : value.toFixed(1);
}

/** Seconds as `1h 2m`, `3m 4s` or `5s`. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${s}s`;
}

/** A table from column names and rows of cells (nodes or strings). */
export function table(columns, rows, { caption = null, className = '' } = {}) {
  return el(
    'table',
    { className },
    caption === null ? null : el('caption', {}, caption),
    el('thead', {}, el('tr', {}, columns.map((name) => el('th', { attrs: { scope: 'col' } }, name)))),
    el('tbody', {}, rows.map((row) => (row instanceof Node ? row : el('tr', {}, row.map((cell) => el('td', {}, cell)))))),
  );
}

/** A labelled form field: `<label>` then the control. */
export function field(label, control, hint = null) {
  if (!control.id) control.id = `f-${Math.random().toString(36).slice(2, 9)}`;
  return el(
    'div',
    { className: 'field' },
    el('label', { htmlFor: control.id }, label),
    control,
    hint === null ? null : el('span', { className: 'hint' }, hint),
  );
}

/** An error box naming the problem. */
export function problem(message) {
  return el('p', { className: 'problem', attrs: { role: 'alert' } }, message);
}

/**
 * Asks for confirmation in a modal dialog that says what will happen. Resolves to
 * true only if the person chose `confirmLabel`; Escape and Cancel resolve to false.
 */
export function confirmAction({ title, message, confirmLabel }) {
  return new Promise((resolve) => {
    const cancel = el('button', { type: 'button', className: 'secondary', value: 'cancel' }, 'Cancel');
    const confirm = el('button', { type: 'button', className: 'danger', value: 'confirm' }, confirmLabel);
    const dialog = el(
      'dialog',
      { className: 'confirm', attrs: { 'aria-labelledby': 'confirm-title' } },
      el('h2', { id: 'confirm-title' }, title),
      (Array.isArray(message) ? message : [message]).map((line) => el('p', {}, line)),
      el('div', { className: 'actions' }, cancel, confirm),
    );
    let answered = false;
    const finish = (answer) => {
      if (answered) return;
      answered = true;
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    cancel.addEventListener('click', () => finish(false));
    confirm.addEventListener('click', () => finish(true));
    dialog.addEventListener('close', () => finish(false));
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** An event as indented JSON (the API embeds `data` and `metadata` as JSON). */
export function eventJson(event) {
  return JSON.stringify(event, null, 2);
}

/**
 * Runs `task` now and then again `ms` after each run finishes (so never more than once
 * per `ms`, and never two at once). Returns a function that stops it.
 */
export function repeat(task, ms = 1000) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    if (stopped) return;
    try {
      await task();
    } finally {
      if (!stopped) timer = setTimeout(run, ms);
    }
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}


/**
 * `replace`, keeping the keyboard focus: if the focused element inside `node` has a
 * `data-key`, the new element with the same key gets the focus back. Views that
 * re-render every second use it, so tabbing through their buttons keeps working.
 */
export function replaceKeepingFocus(node, ...children) {
  const focused = document.activeElement;
  const key = focused && node.contains(focused) ? focused.getAttribute('data-key') : null;
  replace(node, ...children);
  if (key) {
    const again = [...node.querySelectorAll('[data-key]')].find((candidate) => candidate.getAttribute('data-key') === key);
    if (again) again.focus();
  }
  return node;
}
