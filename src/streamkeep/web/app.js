// The chat page: sidebar of chats, the active branch of one chat, the composer.
// The server is the truth: after every stream the chat is fetched again.

import { createAccount } from "./account.js";
import { createAttachments } from "./attach.js";
import { api, runStream, streams } from "./api.js";
import { applyChunk, liveMessage, textOf } from "./parts.js";
import { el, icon, messageElement } from "./render.js";
import { chatTitle, createSidebar } from "./sidebar.js";
import { createToolsPicker } from "./tools.js";

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  backdrop: $("backdrop"),
  menu: $("menu"),
  newChat: $("new-chat"),
  chatList: $("chat-list"),
  moreChats: $("more-chats"),
  title: $("chat-title"),
  model: $("model"),
  alerts: $("alerts"),
  notice: $("notice"),
  transcript: $("transcript"),
  empty: $("empty"),
  messages: $("messages"),
  composer: $("composer"),
  input: $("input"),
  send: $("send"),
  stop: $("stop"),
  attach: $("attach"),
  attachInput: $("attach-input"),
  attachments: $("attachments"),
};

const state = {
  chats: [],
  nextCursor: null,
  chat: null, // the open chat (without its messages), or null for a new one
  messages: [],
  models: [],
  modelStatus: new Map(), // model id -> its /v1/models entry, for one not ready yet
  // {chatId, msg, controller, started, stopRequested} while a reply streams: `started`
  // once the server has answered the request (it knows the generation), `stopRequested`
  // once Stop was pressed (the stop goes out when `started`).
  live: null,
  starting: false, // a send is creating its chat or request (before `live` is set)
  replies: 0, // replies started on this page: a chat fetched across one is out of date
  elements: new Map(), // message object -> its <li>
};

// What Continue sends: a follow-up under the cut reply, as a reader would type it.
const CONTINUE_TEXT = "Continue from where you stopped.";

const ctx = {
  busy: () => state.live !== null,
  // Only the newest reply can be continued: under an older one it would start a branch.
  canContinue: (msg) => Boolean(msg.id) && state.messages.at(-1) === msg,
  onContinue: (msg) => {
    if (ctx.canContinue(msg)) send(CONTINUE_TEXT, { parentId: msg.id, fromComposer: false });
  },
  onEdit: startEdit,
  onRegenerate: regenerate,
  onSwitch: switchVersion,
};

// ---------- errors ----------

function showError(err) {
  if (err && err.name === "AbortError") return;
  // A 401 has taken the page to the sign-in screen, which says why.
  if (err && err.status === 401) return;
  const text = err instanceof Error ? err.message : String(err);
  const close = el("button", {
    type: "button",
    class: "icon-btn",
    "aria-label": "Dismiss",
    html: "×",
  });
  const item = el("div", { class: "alert" }, el("span", {}, text), close);
  close.addEventListener("click", () => item.remove());
  ui.alerts.append(item);
}

function clearErrors() {
  ui.alerts.replaceChildren();
}

const sidebar = createSidebar(ui, state, {
  showError,
  onRenamed(chat) {
    if (state.chat && state.chat.id === chat.id) Object.assign(state.chat, chat);
    renderHeader();
  },
  onDeleted(chat) {
    if (state.chat && state.chat.id === chat.id) location.hash = "#/";
  },
});

const tools = createToolsPicker(state, { showError });

// ---------- models ----------

// Asked again this often while a model is being prepared, so it turns ready in place.
const MODEL_RECHECK_MS = 15000;
let modelRecheck = null;

async function loadModels() {
  let listed = [];
  try {
    listed = await api.models();
  } catch {
    // no model list: the chat's own model is still offered below
  }
  state.models = listed.map((m) => m.id);
  state.modelStatus = new Map(listed.filter((m) => m.status).map((m) => [m.id, m]));
  renderModels();
  clearTimeout(modelRecheck);
  if (state.modelStatus.size > 0) modelRecheck = setTimeout(loadModels, MODEL_RECHECK_MS);
}

function modelLabel(name) {
  const status = state.modelStatus.get(name);
  if (!status) return name;
  const left = status.seconds_left ? `, about ${Math.ceil(status.seconds_left / 60)} min left` : "";
  return `${name} (${status.status}${left})`;
}

function renderModels() {
  const current = state.chat ? state.chat.model : ui.model.value || state.models[0];
  const names = [...state.models];
  if (current && !names.includes(current)) names.unshift(current);
  ui.model.replaceChildren(
    ...names.map((m) => {
      const status = state.modelStatus.get(m);
      return el("option", { value: m, title: status ? status.status_detail : m }, modelLabel(m));
    }),
  );
  if (current) ui.model.value = current;
  ui.model.hidden = names.length === 0;
}

// ---------- the open chat ----------

function renderHeader() {
  ui.title.textContent = state.chat ? chatTitle(state.chat) : "New chat";
  document.title = state.chat ? `${chatTitle(state.chat)} · streamkeep` : "streamkeep";
}

function renderMessages() {
  const visible = state.messages.filter((m) => m.role === "user" || m.role === "assistant");
  ui.empty.hidden = visible.length > 0;
  const keep = new Map();
  let cursor = ui.messages.firstElementChild;
  for (const msg of visible) {
    // Reuse the element of the same message (by id once known) so updates happen in place.
    const old = state.elements.get(msg) || (msg.id && findById(msg.id));
    const node = messageElement(old, msg, ctx);
    keep.set(msg, node);
    if (node !== cursor) ui.messages.insertBefore(node, cursor);
    else cursor = cursor.nextElementSibling;
  }
  while (cursor) {
    const next = cursor.nextElementSibling;
    cursor.remove();
    cursor = next;
  }
  state.elements = keep;
  renderComposerButtons();
}

function renderComposerButtons() {
  ui.send.hidden = ctx.busy();
  ui.stop.hidden = !ctx.busy();
  // A stop asked for but not yet done (or waiting for the request to reach the server).
  const stopping = Boolean(state.live && state.live.stopRequested);
  if (stopping) ui.stop.setAttribute("aria-disabled", "true");
  else ui.stop.removeAttribute("aria-disabled");
  ui.stop.setAttribute("aria-label", stopping ? "Stopping the answer" : "Stop the answer");
  const label = ui.stop.querySelector("span");
  if (label) label.textContent = stopping ? "Stopping…" : "Stop";
}

// After a reply ends, the caret goes back to the message box, unless the reader has put
// focus (or a text selection) somewhere else meanwhile.
function focusLost() {
  const a = document.activeElement;
  if (a && a !== document.body && a !== document.documentElement) {
    // Focus on something now hidden, disabled or gone is focus lost too.
    if (a !== ui.send && a !== ui.stop && a.isConnected && !a.disabled && !a.closest("[hidden]"))
      return false;
  }
  const sel = document.getSelection();
  return !sel || sel.isCollapsed;
}

function returnFocus() {
  if (focusLost()) ui.input.focus({ preventScroll: true });
}

function findById(id) {
  for (const [msg, node] of state.elements) if (msg.id === id) return node;
  return null;
}

let frame = 0;
function scheduleRender() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const stick = nearBottom();
    renderMessages();
    if (stick) scrollToBottom();
  });
}

function nearBottom() {
  const t = ui.transcript;
  return t.scrollHeight - t.scrollTop - t.clientHeight < 120;
}

function scrollToBottom() {
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function chatIdFromHash() {
  const m = location.hash.match(/^#\/chat\/([^/?#]+)/);
  return m ? decodeURIComponent(m[1]) : null;
}

async function openChat(id) {
  if (state.live && state.live.chatId === id) return; // already open and streaming
  if (state.live) state.live.controller.abort(); // the reply goes on in the server
  clearErrors();
  tools.close();
  if (!id) {
    state.chat = null;
    state.messages = [];
    renderAll();
    ui.input.focus();
    return;
  }
  await reloadChat(id, { resume: true });
  scrollToBottom();
}

async function reloadChat(id, { resume = false } = {}) {
  // A reply started while the fetch was out (e.g. sent the moment the last one ended) owns
  // the transcript now: this copy predates it, and the reply's own reload follows it.
  const replies = state.replies;
  let chat;
  try {
    chat = await api.getChat(id);
  } catch (err) {
    showError(
      err.status === 404 ? new Error("This chat does not exist (it may have been deleted).") : err,
    );
    return;
  }
  if (chatIdFromHash() !== id) return; // the reader moved on meanwhile
  if (state.replies !== replies) return;
  const { messages, active_generation: gen, ...rest } = chat;
  state.chat = rest;
  state.messages = messages;
  const known = state.chats.find((c) => c.id === id);
  if (known) Object.assign(known, rest);
  renderAll();
  if (resume && gen && !state.live) {
    const msg = messages.find((m) => m.id === gen.message_id);
    if (msg) attachResume(id, msg);
  }
}

function renderAll() {
  renderHeader();
  renderModels();
  tools.render();
  sidebar.render();
  renderMessages();
}

// ---------- streaming ----------

async function stream(chatId, msg, start) {
  const controller = new AbortController();
  let failed = false;
  // A resume joins a generation the server already has: a stop can go at once.
  const live = { chatId, msg, controller, started: !start.request, stopRequested: false };
  state.live = live;
  state.replies += 1;
  // The Send button is hidden now: a click on it leaves the caret in the message box.
  const fromSend = document.activeElement === ui.send;
  renderMessages();
  if (fromSend) ui.input.focus({ preventScroll: true });
  scrollToBottom();
  try {
    await runStream(
      chatId,
      start,
      {
        onChunk(chunk) {
          // A resume replays from the first event: start the reply afresh, so no text repeats.
          if (chunk.type === "start" && start.replay) msg.parts = [];
          if (chunk.type === "error")
            showError(new Error(`The answer failed: ${chunk.errorText || "unknown error"}`));
          if (applyChunk(msg, chunk)) scheduleRender();
        },
        onReconnecting(on) {
          ui.notice.textContent = on ? "Connection lost. Reconnecting…" : "";
        },
        onStarted() {
          live.started = true;
          if (live.stopRequested) sendStop(live); // Stop was pressed before the server knew
        },
      },
      controller.signal,
    );
  } catch (err) {
    failed = true;
    showError(err);
  } finally {
    ui.notice.textContent = "";
    if (state.live === live) state.live = null;
    renderMessages(); // Stop gives way to Send even if reloading the chat fails below
  }
  if (controller.signal.aborted) return;
  returnFocus();
  // A stream that failed says nothing of the reply: the stored message (reloaded) does.
  if (msg.status === "streaming" && !failed) msg.status = "complete";
  await reloadChat(chatId);
  if (!state.live) returnFocus(); // the reload re-renders: a focused button may be gone
  sidebar.load();
  account.refreshUsage();
}

function attachResume(chatId, msg) {
  msg.status = "streaming";
  return stream(chatId, msg, { replay: true });
}

async function send(text, { parentId = null, fromComposer = true } = {}) {
  // `starting` covers the awaits before the stream exists: a double Enter sends once.
  if (ctx.busy() || state.starting) return;
  state.starting = true;
  try {
    await sendNow(text, parentId, fromComposer);
  } finally {
    state.starting = false;
  }
}

const TITLE_CHARS = 80;

function titleFrom(text) {
  const flat = text.split(/\s+/).filter(Boolean).join(" ");
  if (!flat) return null;
  const chars = Array.from(flat); // code points, as Python counts them
  return chars.length <= TITLE_CHARS ? flat : chars.slice(0, TITLE_CHARS - 1).join("") + "…";
}

async function sendNow(text, parentId, fromComposer) {
  clearErrors();
  let chat = state.chat;
  if (!chat) {
    try {
      // The server's title rule (generation/titles.py), so the sidebar shows the
      // chat's title at once: the text on one line, cut at 80 characters.
      const title = titleFrom(text);
      const body = { title, model: ui.model.value || undefined };
      const chosen = tools.draft();
      if (chosen.length) body.tools = chosen;
      chat = await api.createChat(body);
    } catch (err) {
      showError(err);
      return;
    }
    state.chat = chat;
    state.messages = [];
    state.chats.unshift(chat);
    history.pushState(null, "", `#/chat/${chat.id}`);
    renderAll();
  }
  const files = fromComposer ? attachments.take() : [];
  state.messages.push({
    id: null,
    role: "user",
    parts: [...files, { type: "text", text }],
    status: "complete",
    sibling_ids: [],
  });
  const msg = liveMessage({ model: ui.model.value });
  state.messages.push(msg);
  if (fromComposer) {
    ui.input.value = "";
    autosize();
  }
  const body = { content: text };
  if (files.length) body.files = files;
  if (ui.model.value) body.model = ui.model.value;
  if (parentId) body.parent_id = parentId;
  // Not awaited: `starting` ends here, as the reply goes live (busy from now on). The
  // reply's tail (reloading the chat) must not hold back the next message.
  void stream(chat.id, msg, { request: streams.send(chat.id, body) });
}

async function regenerate(target) {
  if (ctx.busy() || !state.chat) return;
  clearErrors();
  const i = state.messages.indexOf(target);
  if (i < 0) return;
  state.messages = state.messages.slice(0, i);
  const msg = liveMessage({ model: state.chat.model });
  state.messages.push(msg);
  await stream(state.chat.id, msg, { request: streams.regenerate(target.id) });
}

function startEdit(target) {
  if (ctx.busy()) return;
  const node = state.elements.get(target);
  const box = el("textarea", { class: "edit-box", "aria-label": "Edit message", rows: "3" });
  box.value = textOf(target);
  const save = el("button", { type: "submit", class: "primary small" }, "Send");
  const cancel = el("button", { type: "button", class: "ghost small" }, "Cancel");
  const form = el(
    "form",
    { class: "edit-form" },
    box,
    el("div", { class: "edit-actions" }, cancel, save),
  );
  const bubble = node.querySelector(".bubble");
  const restore = () => {
    form.remove();
    bubble.hidden = false;
    node.querySelector(".msg-foot").hidden = false;
  };
  cancel.addEventListener("click", restore);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    } else if (e.key === "Escape") restore();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = box.value.trim();
    if (!text || ctx.busy()) return;
    const i = state.messages.findIndex((m) => m.id === target.id);
    if (i < 0) return;
    restore();
    clearErrors();
    state.messages = state.messages.slice(0, i);
    state.messages.push({
      id: null,
      role: "user",
      parts: [{ type: "text", text }],
      status: "complete",
      sibling_ids: [],
    });
    const msg = liveMessage({ model: state.chat.model });
    state.messages.push(msg);
    await stream(state.chat.id, msg, { request: streams.edit(target.id, text) });
  });
  bubble.hidden = true;
  node.querySelector(".msg-foot").hidden = true;
  node.insertBefore(form, bubble);
  box.focus();
}

async function switchVersion(id) {
  if (ctx.busy() || !state.chat) return;
  try {
    await api.updateChat(state.chat.id, { active_leaf_id: id });
  } catch (err) {
    showError(err);
    return;
  }
  await reloadChat(state.chat.id);
  // The arrows were re-rendered: put focus back on the version group of the same place.
  findById(id)?.querySelector(".versions button:not([disabled])")?.focus();
}

// Stop is remembered: pressed before the stream's request has reached the server (which
// then has nothing to stop yet), it is sent as soon as the server answers that request.
function stop() {
  const live = state.live;
  if (!live || live.stopRequested) return;
  live.stopRequested = true;
  renderComposerButtons();
  if (live.started) sendStop(live);
}

async function sendStop(live) {
  try {
    await api.stop(live.chatId);
  } catch (err) {
    showError(err);
    // Not stopped: let the reader try again.
    live.stopRequested = false;
    if (state.live === live) renderComposerButtons();
  }
}

// ---------- signing in and out ----------

function startChats() {
  loadModels();
  tools.load();
  sidebar.load();
  openChat(chatIdFromHash());
}

// Signed out (or the session ended): nothing of that user's chats may stay on the page,
// in the DOM or in memory, for whoever uses the browser next.
function clearChats() {
  if (state.live) state.live.controller.abort(); // the reply goes on in the server
  clearTimeout(modelRecheck);
  Object.assign(state, {
    chats: [],
    nextCursor: null,
    chat: null,
    messages: [],
    models: [],
    modelStatus: new Map(),
    live: null,
    starting: false,
    elements: new Map(),
  });
  ui.input.value = "";
  autosize();
  ui.notice.textContent = "";
  clearErrors();
  sidebar.setOpen(false);
  tools.clear();
  renderAll();
}

const account = createAccount({
  start: startChats,
  clear: clearChats,
  focus: () => ui.input.focus(),
  showError,
});

// ---------- composer ----------

const attachments = createAttachments({
  list: ui.attachments,
  button: ui.attach,
  input: ui.attachInput,
  dropZone: ui.composer,
  pasteTarget: ui.input,
  showError,
});

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 240)}px`;
}

function submit() {
  const text = ui.input.value.trim();
  if (!text || ctx.busy()) return;
  send(text);
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  submit();
});
ui.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submit();
  }
});
ui.input.addEventListener("input", autosize);
ui.stop.addEventListener("click", stop);
ui.model.addEventListener("change", async () => {
  if (!state.chat) return;
  try {
    state.chat = {
      ...state.chat,
      ...(await api.updateChat(state.chat.id, { model: ui.model.value })),
    };
  } catch (err) {
    showError(err);
  }
});
ui.newChat.addEventListener("click", () => {
  sidebar.setOpen(false);
  if (location.hash === "#/" || location.hash === "") openChat(null);
  else location.hash = "#/";
});
// The hash is the route, so the skip link moves focus itself instead of changing it.
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  ui.input.focus();
});
window.addEventListener("hashchange", () => {
  if (account.isInside()) openChat(chatIdFromHash());
});
window.addEventListener("unhandledrejection", (e) => showError(e.reason));

ui.stop.innerHTML = `${icon("stop")}<span>Stop</span>`;
ui.send.innerHTML = icon("send");
ui.attach.innerHTML = icon("attach");
ui.newChat.insertAdjacentHTML("afterbegin", icon("plus"));

account.boot();
