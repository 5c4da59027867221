// The signed-in user's API keys, in a modal dialog: the list (revoked ones too), a form
// to make one, the new key shown once, and revoke behind a confirm step.

import { identity } from "./api.js";
import { copyText } from "./markdown.js";
import { el } from "./render.js";

const WHEN = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

function when(iso) {
  return el("time", { datetime: iso }, WHEN.format(new Date(iso)));
}

function keyName(key) {
  return key.name || "Unnamed key";
}

export function createKeysDialog() {
  const $ = (id) => document.getElementById(id);
  const ui = {
    dialog: $("keys"),
    close: $("keys-close"),
    form: $("key-form"),
    name: $("key-name"),
    create: $("key-create"),
    newKey: $("new-key"),
    newKeyValue: $("new-key-value"),
    copy: $("new-key-copy"),
    error: $("keys-error"),
    list: $("keys-list"),
  };

  function showError(err) {
    // An ended session is the sign-in screen's to tell (and this dialog is closed by then).
    if (err.name === "AbortError" || err.status === 401) return;
    ui.error.textContent = err.message;
  }

  async function open() {
    ui.error.textContent = "";
    ui.list.replaceChildren();
    ui.dialog.showModal();
    ui.name.focus();
    await refresh();
  }

  function close() {
    if (ui.dialog.open) ui.dialog.close();
  }

  // The new key is shown until the dialog closes, never again (the server keeps a hash).
  function forgetNewKey() {
    ui.newKeyValue.value = "";
    ui.newKey.hidden = true;
  }

  async function refresh() {
    try {
      renderList(await identity.listKeys());
    } catch (err) {
      showError(err);
    }
  }

  function renderList(keys) {
    const rows = keys.map(keyRow);
    if (!rows.length) rows.push(el("li", { class: "no-keys" }, "No keys yet."));
    ui.list.replaceChildren(...rows);
  }

  function keyRow(key) {
    const revoked = Boolean(key.revoked_at);
    const facts = [el("span", {}, "Created ", when(key.created_at))];
    facts.push(
      key.last_used_at
        ? el("span", {}, "Last used ", when(key.last_used_at))
        : el("span", {}, "Never used"),
    );
    if (revoked) facts.push(el("span", {}, "Revoked ", when(key.revoked_at)));
    const status = revoked
      ? el("span", { class: "badge key-revoked" }, "Revoked")
      : el("span", { class: "badge key-active" }, "Active");
    const head = el(
      "div",
      { class: "key-head" },
      el("span", { class: "key-name" }, keyName(key)),
      el("code", { class: "key-prefix" }, `${key.prefix}…`),
      status,
    );
    const row = el(
      "li",
      { class: `key-row${revoked ? " revoked" : ""}`, "data-key-id": key.id, tabindex: "-1" },
      el("div", { class: "key-main" }, head, el("p", { class: "key-facts" }, ...facts)),
    );
    if (!revoked) row.append(revokeButton(row, key));
    return row;
  }

  function revokeButton(row, key) {
    const actions = el("div", { class: "key-actions" });
    const ask = el(
      "button",
      { type: "button", class: "ghost small", "aria-label": `Revoke key ${keyName(key)}` },
      "Revoke",
    );
    ask.addEventListener("click", () => confirmRevoke(actions, ask, key));
    actions.append(ask);
    return actions;
  }

  // Revoking cannot be undone (programs using the key stop working at once): ask first,
  // with focus on Cancel, so a stray double Enter revokes nothing.
  function confirmRevoke(actions, ask, key) {
    const yes = el("button", { type: "button", class: "danger small" }, "Revoke");
    const no = el("button", { type: "button", class: "ghost small" }, "Cancel");
    actions.replaceChildren(
      el("span", { class: "confirm-text" }, `Revoke “${keyName(key)}”?`),
      yes,
      no,
    );
    no.addEventListener("click", () => {
      actions.replaceChildren(ask);
      ask.focus();
    });
    yes.addEventListener("click", () => revoke(key));
    no.focus();
  }

  async function revoke(key) {
    try {
      await identity.revokeKey(key.id);
    } catch (err) {
      showError(err);
    }
    await refresh();
    // The row now says "Revoked": put focus there, where the buttons were.
    ui.list.querySelector(`[data-key-id="${CSS.escape(key.id)}"]`)?.focus();
  }

  async function create(e) {
    e.preventDefault();
    ui.error.textContent = "";
    ui.create.disabled = true;
    let made;
    try {
      made = await identity.createKey(ui.name.value.trim());
    } catch (err) {
      showError(err);
      return;
    } finally {
      ui.create.disabled = false;
    }
    ui.name.value = "";
    ui.newKeyValue.value = made.key;
    ui.newKey.hidden = false;
    // Focus on the key, selected, so it is read out and a Ctrl+C copies it too.
    ui.newKeyValue.focus();
    ui.newKeyValue.select();
    await refresh();
  }

  ui.form.addEventListener("submit", create);
  ui.copy.addEventListener("click", () => copyText(ui.copy, ui.newKeyValue.value));
  ui.close.addEventListener("click", close);
  ui.dialog.addEventListener("close", forgetNewKey);

  return { open, close };
}
