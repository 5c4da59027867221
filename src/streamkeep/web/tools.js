// The tools switch: a "Tools" button in the top bar opens a list of the server's tools
// (GET /api/tools) with a checkbox each. For an open chat a change PATCHes its `tools`;
// for a new chat the choice is kept and sent when the chat is created (`draft()`).

import { api } from "./api.js";
import { el } from "./render.js";

/** hooks: showError(err). */
export function createToolsPicker(state, hooks) {
  const $ = (id) => document.getElementById(id);
  const ui = {
    picker: $("tools-picker"),
    button: $("tools-button"),
    count: $("tools-count"),
    menu: $("tools-menu"),
    list: $("tools-list"),
  };
  let offered = []; // the server's tools: {name, description, input_schema, source}
  let draft = []; // the choice for the next new chat
  let boxes = new Map(); // tool name -> its checkbox
  let saving = Promise.resolve(); // PATCHes go out one after another, in order
  let pending = 0; // PATCHes not answered yet: only the last one's answer is shown
  let wanted = null; // {chatId, tools} of the last PATCH, while any is unanswered

  // What the boxes show: a chat fetched again meanwhile must not undo a change on its way.
  function chosen() {
    if (!state.chat) return draft;
    if (pending > 0 && wanted.chatId === state.chat.id) return wanted.tools;
    return state.chat.tools || [];
  }

  async function load() {
    try {
      offered = (await api.tools()).items;
    } catch {
      offered = []; // no list, no switch: replies go on with the chat's tools as stored
    }
    build();
    render();
  }

  function build() {
    boxes = new Map();
    const rows = offered.map((tool) => {
      const id = `tool-option-${tool.name}`;
      const box = el("input", { type: "checkbox", id, value: tool.name });
      box.addEventListener("change", () => toggle());
      boxes.set(tool.name, box);
      // The description is outside the label: the checkbox's name is the tool's name.
      const about = tool.description
        ? el("span", { class: "tool-about", id: `${id}-about` }, tool.description)
        : null;
      if (about) box.setAttribute("aria-describedby", about.id);
      const label = el("label", { for: id, class: "tool-option-name" }, tool.name);
      return el("li", { class: "tool-option" }, box, el("div", {}, label, about));
    });
    ui.list.replaceChildren(...rows);
  }

  /** Show the open chat's tools (or the new chat's choice); no tools offered, no switch. */
  function render() {
    const on = chosen();
    ui.picker.hidden = offered.length === 0;
    for (const [name, box] of boxes) box.checked = on.includes(name);
    const n = on.filter((name) => boxes.has(name)).length;
    ui.count.textContent = String(n);
    ui.count.hidden = n === 0;
    ui.button.setAttribute("aria-label", `Tools: ${n === 0 ? "none" : n} on`);
    ui.button.classList.toggle("on", n > 0);
  }

  function toggle() {
    const on = offered.map((t) => t.name).filter((name) => boxes.get(name).checked);
    if (!state.chat) {
      draft = on;
      render();
      return;
    }
    const chatId = state.chat.id;
    wanted = { chatId, tools: on }; // shown at once; the server's answer settles it
    pending += 1;
    render();
    saving = saving.then(() => save(chatId, on));
  }

  async function save(chatId, tools) {
    let stored = null;
    try {
      stored = (await api.updateChat(chatId, { tools })).tools;
    } catch (err) {
      hooks.showError(err);
      // Not saved: show what the server has (the error above says enough if that fails).
      stored = await api.getChat(chatId).then(
        (chat) => chat.tools,
        () => null,
      );
    }
    pending -= 1;
    // An earlier answer would undo the boxes ticked since: only the last one counts.
    if (stored && pending === 0) settle(chatId, stored);
  }

  function settle(chatId, tools) {
    const known = state.chats.find((c) => c.id === chatId);
    if (known) known.tools = tools;
    if (state.chat && state.chat.id === chatId) {
      state.chat.tools = tools;
      render();
    }
  }

  function setOpen(open) {
    ui.menu.hidden = !open;
    ui.button.setAttribute("aria-expanded", String(open));
  }

  function close({ focus = false } = {}) {
    if (ui.menu.hidden) return;
    setOpen(false);
    if (focus) ui.button.focus();
  }

  ui.button.addEventListener("click", () => setOpen(ui.menu.hidden));
  ui.picker.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !ui.menu.hidden) {
      e.stopPropagation();
      close({ focus: true });
    }
  });
  // A click or focus outside the picker closes it.
  document.addEventListener("click", (e) => {
    if (!ui.picker.contains(e.target)) close();
  });
  ui.picker.addEventListener("focusout", (e) => {
    if (e.relatedTarget && !ui.picker.contains(e.relatedTarget)) close();
  });

  return {
    load,
    render,
    close,
    // The tools a new chat is created with.
    draft: () => [...draft],
    clear() {
      offered = [];
      draft = [];
      build();
      close();
      render();
    },
  };
}
