// Small DOM helpers. Elements with a data-testid are looked up once per view (`hooks`) and kept.
import { moneyDigits, usd, usdExact } from "./format.js";

/** Every element under `root` that has a data-testid, by that id, found once. */
export function hooks(root) {
  const found = {};
  const elements = [...root.querySelectorAll("[data-testid]")];
  if (root.dataset?.testid) elements.unshift(root);
  for (const element of elements) found[element.dataset.testid] = element;
  return new Proxy(found, {
    get(target, name) {
      if (typeof name === "string" && !(name in target)) throw new Error(`no element with data-testid="${name}"`);
      return target[name];
    },
  });
}

/** Create an element: el("td", {className: "num", dataset: {value: 1}}, "text", child...). */
export function el(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "dataset") for (const [k, v] of Object.entries(value)) element.dataset[k] = String(v);
    else if (key === "attrs") for (const [k, v] of Object.entries(value)) element.setAttribute(k, String(v));
    else element[key] = value;
  }
  element.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

/** Text that may break after _ . - / : @ (long names and emails wrap instead of overflowing). */
export function breakable(text) {
  const fragment = document.createDocumentFragment();
  for (const part of String(text).split(/(?<=[_./:@-])/)) {
    if (fragment.childNodes.length) fragment.append(document.createElement("wbr"));
    fragment.append(part);
  }
  return fragment;
}

/** A number in a card: its exact value in data-value, formatted text, the exact amount on hover. */
export function setNumber(element, value, text, title) {
  element.dataset.value = String(value);
  element.textContent = text;
  if (title) element.title = title;
  else element.removeAttribute("title");
}

/**
 * Fill a <table> from rows. A column: {key, label, num, money, format(value, row), value(row),
 * cell(value, row), title(value, row)}. A `money` column shows every row with the same decimals.
 * Every cell keeps its raw value in data-value and its column in data-key (the tests read them).
 */
export function fillTable(table, columns, rows, { empty = "None yet.", caption, rowKey } = {}) {
  table.replaceChildren();
  if (caption) table.createCaption().textContent = caption;
  const raw = (column, row) => (column.value ? column.value(row) : row[column.key]);
  columns = columns.map((column) => {
    if (!column.money) return column;
    const digits = moneyDigits(rows.map((row) => raw(column, row)));
    const missing = (v) => v === "" || v === null || v === undefined;
    return {
      ...column,
      num: true,
      format: (v) => (missing(v) ? "—" : usd(v, digits)),
      title: (v) => (missing(v) ? "" : usdExact(v)),
    };
  });
  const head = table.createTHead().insertRow();
  for (const column of columns) {
    head.appendChild(el("th", { scope: "col", className: column.num ? "num" : "", textContent: column.label }));
  }
  const body = table.createTBody();
  if (rows.length === 0) {
    const row = body.insertRow();
    row.className = "empty-row";
    const cell = row.insertCell();
    cell.colSpan = columns.length;
    cell.textContent = empty;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    if (rowKey) tr.dataset.key = String(rowKey(row));
    for (const column of columns) {
      const cellValue = raw(column, row);
      const td = tr.insertCell();
      td.dataset.key = column.key;
      td.dataset.value = cellValue === null || cellValue === undefined ? "" : String(cellValue);
      if (column.num) td.className = "num";
      if (column.cell) td.append(column.cell(cellValue, row));
      else if (column.format) td.textContent = column.format(cellValue, row);
      else td.append(cellValue === null || cellValue === undefined || cellValue === "" ? "—" : breakable(cellValue));
      const title = column.title?.(cellValue, row);
      if (title) td.title = title;
    }
  }
}

/**
 * A view's status line: loading, empty, error, denied (permission) or ready.
 * `content` is hidden while loading (first time), on error and on denied.
 */
export function setStatus(statusElement, content, state, message = "") {
  statusElement.dataset.state = state;
  statusElement.textContent = message;
  statusElement.hidden = state === "ready";
  statusElement.classList.toggle("error", state === "error" || state === "denied");
  if (content) content.hidden = state === "loading" || state === "error" || state === "denied";
}

/** The message of a callable or Firestore error, and whether it means "not allowed". */
export function describeError(error) {
  const code = String(error?.code ?? "");
  const denied = code.endsWith("permission-denied") || code.endsWith("unauthenticated");
  return { denied, message: error?.message || String(error) };
}

/** What to show for a failed read: `deniedText` when it was not allowed, else `failed: <the error>`. */
export function failureText(error, deniedText, failed) {
  const { denied, message } = describeError(error);
  return { denied, text: denied ? deniedText : `${failed}: ${message}` };
}

/** Show a failed load in a status line (see failureText). */
export function showFailure(statusElement, content, error, deniedText, failed) {
  const { denied, text } = failureText(error, deniedText, failed);
  setStatus(statusElement, content, denied ? "denied" : "error", text);
}

/** A field's name in words: its data-label, else its <label>'s own text (not its options'). */
function fieldLabel(input) {
  if (input.dataset.label) return input.dataset.label;
  const label = input.labels?.[0];
  if (!label) return input.dataset.field;
  const own = [...label.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent);
  return own.join(" ").replace(/\s+/g, " ").trim() || input.dataset.field;
}

/** Unmark a form's fields (see markProblems). */
export function clearProblems(form) {
  for (const input of form.querySelectorAll("[aria-invalid]")) {
    input.removeAttribute("aria-invalid");
    input.removeAttribute("aria-describedby");
  }
}

let messageIds = 0;

/**
 * Mark the fields of `form` that a callable's field problems name (`details`: [{field, problem}],
 * a field path such as `limits.features.image_generation.dailyRuns`): each field whose
 * data-field is that path, or the longest that starts it (`limits.features.bad name.[key]` is
 * the feature's name), gets aria-invalid and is described by `message`. Returns the problems
 * in words ("Plan name: must be …"), or null when there are none.
 */
export function markProblems(form, message, details) {
  if (!form || !Array.isArray(details) || details.length === 0) return null;
  const inputs = [...form.querySelectorAll("[data-field]")];
  if (!message.id) message.id = `form-message-${++messageIds}`;
  const words = details.map(({ field, problem }) => {
    const path = String(field ?? "");
    const starts = (f) => path === f || path.startsWith(`${f}.`) || path.startsWith(`${f}[`);
    const input = inputs
      .filter((i) => starts(i.dataset.field))
      .sort((a, b) => b.dataset.field.length - a.dataset.field.length)[0];
    if (!input) return `${path}: ${problem}`;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", message.id);
    return `${fieldLabel(input)}: ${problem}`;
  });
  form.querySelector("[aria-invalid]")?.focus();
  return words.join("; ");
}

/**
 * Submit a form: its button disabled and its message "Saving…" meanwhile; `send` returns the
 * message for success, then `after` runs (a reload). A failure of either shows `failed: <the error>`;
 * with `form`, a callable's field problems mark their fields and are named in words. An error
 * with `ownMessage` is shown as that message alone.
 */
export async function submitForm({ button, message, send, after = async () => {}, failed, form }) {
  message.classList.remove("error");
  message.dataset.state = "saving";
  message.textContent = "Saving…";
  button.disabled = true;
  if (form) clearProblems(form);
  try {
    message.textContent = await send();
    message.dataset.state = "saved";
    await after();
  } catch (error) {
    message.classList.add("error");
    message.dataset.state = "error";
    const problems = markProblems(form, message, error?.details);
    const text = problems ?? describeError(error).message;
    message.textContent = error?.ownMessage ? `${error.ownMessage}: ${text}` : `${failed}: ${text}`;
  } finally {
    button.disabled = false;
  }
}

/** Show a form's own (client-side) problem the way submitForm shows a callable's. */
export function formProblem(form, message, problem, input) {
  clearProblems(form);
  message.classList.add("error");
  message.dataset.state = "error";
  if (input) {
    if (!message.id) message.id = `form-message-${++messageIds}`;
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", message.id);
    input.focus();
  }
  message.textContent = problem;
}

/** A sequence of requests where only the latest answer counts (quick month changes). */
export class Latest {
  #seq = 0;
  /** Start a request; the returned function says whether it is still the latest one. */
  begin() {
    const seq = ++this.#seq;
    return () => seq === this.#seq;
  }
  /** Forget every request under way. */
  cancel() {
    this.#seq += 1;
  }
}
