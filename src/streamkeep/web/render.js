// DOM for messages. Elements are kept per message and updated in place, so a streaming
// reply does not flicker, folded reasoning stays as the reader left it, and focus survives.

import { copyText, renderMarkdown } from "./markdown.js";
import { textOf } from "./parts.js";

export const ICONS = {
  copy: '<path d="M9 9h10v10H9z M5 15V5h10"/>',
  redo: '<path d="M4 12a8 8 0 1 0 2.3-5.6M4 4v4h4"/>',
  edit: '<path d="M4 20h4L19 9l-4-4L4 16z M13 7l4 4"/>',
  prev: '<path d="M15 6l-6 6 6 6"/>',
  next: '<path d="M9 6l6 6-6 6"/>',
  trash: '<path d="M5 7h14 M10 7V4h4v3 M7 7l1 13h8l1-13"/>',
  plus: '<path d="M12 5v14 M5 12h14"/>',
  menu: '<path d="M4 7h16 M4 12h16 M4 17h16"/>',
  send: '<path d="M12 19V5 M6 11l6-6 6 6"/>',
  stop: '<rect x="7" y="7" width="10" height="10" rx="1.5"/>',
  attach: '<path d="M20 11l-8.5 8.5a5 5 0 0 1-7-7L13 4a3.5 3.5 0 0 1 5 5l-8.5 8.5a2 2 0 0 1-3-3L14 7"/>',
};

export function icon(name) {
  return `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">${ICONS[name]}</svg>`;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "html")
      node.innerHTML = v; // only ever our own icon markup
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function iconButton(name, label, onclick, disabled) {
  return el("button", {
    type: "button",
    class: "icon-btn",
    "aria-label": label,
    title: label,
    html: icon(name),
    onclick,
    disabled,
  });
}

const STATUS_TEXT = {
  stopped: "Stopped",
  error: "Error",
  interrupted: "Interrupted",
};

// What a call's state means to the reader. A call formed but without a result is running
// while its reply streams; in a reply that has ended it was never run (stopped first).
const TOOL_STATUS = {
  running: "running…",
  done: "done",
  error: "error",
  "not-run": "not run",
};

function toolStatus(part, live) {
  if (part.state === "output-available") return "done";
  if (part.state === "output-error") return "error";
  return live ? "running" : "not-run";
}

function pretty(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

// One line of the summary: the arguments or result in short (the body has them whole).
function brief(value, limit = 60) {
  const text = (typeof value === "string" ? value : (JSON.stringify(value) ?? ""))
    .replace(/\s+/g, " ")
    .trim();
  const chars = Array.from(text);
  return chars.length <= limit ? text : chars.slice(0, limit - 1).join("") + "…";
}

// Arguments still streaming are partial JSON: shown as they came until they parse.
function argumentsOf(part) {
  if (part.input !== undefined) return part.input;
  const raw = part.inputText || "";
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function kindOf(part) {
  if (part.type === "text" || part.type === "reasoning") return part.type;
  if (part.type === "file" && String(part.mediaType || "").startsWith("image/")) return "image";
  if (part.type.startsWith("tool-") || part.type === "dynamic-tool") return "tool";
  return "other";
}

function newPartNode(kind) {
  if (kind === "text") return el("div", { class: "md" });
  if (kind === "image") return el("img", { class: "msg-image", alt: "Attached image" });
  if (kind === "reasoning") {
    return el(
      "details",
      { class: "reasoning" },
      el("summary", {}, "Reasoning"),
      el("div", { class: "reasoning-text" }),
    );
  }
  if (kind === "tool") {
    return el("details", { class: "tool" }, el("summary", {}), el("div", { class: "tool-body" }));
  }
  return el("div", { hidden: true });
}

function updatePart(node, part, msg, last) {
  const kind = node.dataset.kind;
  const streaming = msg.status === "streaming" && last;
  if (kind === "text") {
    if (msg.role === "user") node.textContent = part.text;
    else if (node._text !== part.text) renderMarkdown(node, part.text);
    node._text = part.text;
    node.classList.toggle("streaming", streaming);
  } else if (kind === "reasoning") {
    node.querySelector("summary").textContent = streaming ? "Thinking…" : "Reasoning";
    node.querySelector(".reasoning-text").textContent = part.text;
  } else if (kind === "tool") {
    updateTool(node, part, msg.status === "streaming");
  } else if (kind === "image") {
    // A stored image's /api/images/... (same origin, the session's cookie), or the
    // data: URI of one just sent, until the chat is fetched again.
    if (node.getAttribute("src") !== part.url) node.setAttribute("src", part.url);
  }
}

// The summary says which tool, with what, and how it went; the body (folded until the
// reader opens it) has the arguments and the result or error in full.
function updateTool(node, part, live) {
  const status = toolStatus(part, live);
  const args = argumentsOf(part);
  const key = JSON.stringify([status, args, part.output, part.errorText]);
  if (node._key === key) return; // unchanged: leave a reader's selection alone
  node._key = key;
  const name = part.type === "dynamic-tool" ? part.toolName : part.type.slice(5);
  node.dataset.tool = name;
  node.dataset.state = status;
  const outcome =
    status === "done" ? brief(part.output) : status === "error" ? brief(part.errorText || "") : "";
  const summary = [
    el("span", { class: "tool-mark", "aria-hidden": "true" }),
    el("span", { class: "tool-name" }, name),
    el("span", { class: "tool-args" }, brief(args)),
    outcome ? el("span", { class: "tool-outcome" }, `→ ${outcome}`) : null,
    el("span", { class: `tool-state state-${status}` }, TOOL_STATUS[status]),
  ];
  node.querySelector("summary").replaceChildren(...summary.filter(Boolean));
  const rows = [el("div", { class: "tool-label" }, "Arguments"), el("pre", {}, pretty(args))];
  if (status === "done") {
    rows.push(el("div", { class: "tool-label" }, "Result"), el("pre", {}, pretty(part.output)));
  } else if (status === "error") {
    rows.push(
      el("div", { class: "tool-label" }, "Error"),
      el("pre", { class: "bad" }, part.errorText || ""),
    );
  } else if (status === "not-run") {
    rows.push(el("p", { class: "tool-note" }, "The answer ended before this call was run."));
  }
  node.querySelector(".tool-body").replaceChildren(...rows);
}

function renderParts(container, msg) {
  const parts = msg.parts.filter((p) => kindOf(p) !== "other");
  // Dots while nothing shows yet, and while the model answers calls that have all ended.
  const empty = !parts.some((p) => (p.text ?? "x") !== "");
  const calls = parts.filter((p) => kindOf(p) === "tool");
  const answered =
    kindOf(parts.at(-1) ?? { type: "" }) === "tool" &&
    calls.every((p) => p.state === "output-available" || p.state === "output-error");
  const pending = msg.status === "streaming" && (empty || answered);
  parts.forEach((part, i) => {
    const kind = kindOf(part);
    let node = container.children[i];
    if (!node || node.dataset.kind !== kind) {
      const fresh = newPartNode(kind);
      fresh.dataset.kind = kind;
      if (node) node.replaceWith(fresh);
      else container.append(fresh);
      node = fresh;
    }
    updatePart(node, part, msg, i === parts.length - 1);
  });
  while (container.children.length > parts.length) container.lastElementChild.remove();
  if (pending) {
    container.append(
      el(
        "div",
        { class: "typing", "aria-label": "The model is answering" },
        el("span"),
        el("span"),
        el("span"),
      ),
    );
  }
}

function usageText(usage) {
  if (!usage) return null;
  const bits = [`${usage.input_tokens ?? 0} in`, `${usage.output_tokens ?? 0} out`];
  if (usage.reasoning_tokens) bits.push(`${usage.reasoning_tokens} reasoning`);
  if (usage.cached_input_tokens) bits.push(`${usage.cached_input_tokens} cached`);
  return `${usage.estimated ? "≈ " : ""}${bits.join(" · ")} tokens`;
}

function versions(msg, ctx) {
  const ids = msg.sibling_ids || [];
  if (ids.length < 2 || !msg.id) return null;
  const i = ids.indexOf(msg.id);
  const busy = ctx.busy();
  return el(
    "div",
    { class: "versions", role: "group", "aria-label": "Versions" },
    iconButton("prev", "Previous version", () => ctx.onSwitch(ids[i - 1]), busy || i <= 0),
    el("span", { class: "version-count" }, `${i + 1}/${ids.length}`),
    iconButton("next", "Next version", () => ctx.onSwitch(ids[i + 1]), busy || i >= ids.length - 1),
  );
}

// Buttons act on node._msg, the latest object for that message, since the footer is only
// rebuilt when what it shows changes, while a reload brings new objects every time.
function footer(node, msg, ctx) {
  const current = () => node._msg;
  const busy = ctx.busy();
  const items = [versions(msg, ctx)];
  if (msg.role === "user") {
    items.push(iconButton("edit", "Edit message", () => ctx.onEdit(current()), busy || !msg.id));
    return items;
  }
  if (STATUS_TEXT[msg.status]) {
    items.push(el("span", { class: `badge status-${msg.status}` }, STATUS_TEXT[msg.status]));
  }
  const usage = usageText(msg.usage);
  if (usage && msg.status !== "streaming") items.push(el("span", { class: "usage" }, usage));
  if (msg.model && msg.status !== "streaming")
    items.push(el("span", { class: "model-name" }, msg.model));
  if (msg.status !== "streaming") {
    const copy = iconButton("copy", "Copy answer", () => copyText(copy, textOf(current())));
    items.push(
      el("span", { class: "spacer" }),
      copy,
      iconButton("redo", "Regenerate answer", () => ctx.onRegenerate(current()), busy || !msg.id),
    );
  }
  return items;
}

// A reply cut by the token limit (finish reason "length") looks finished: say it is not,
// and on the last reply offer to ask for the rest.
function renderCutNote(node, msg, ctx) {
  const cut =
    msg.role === "assistant" && msg.finish_reason === "length" && msg.status !== "streaming";
  const note = node.querySelector(".cut-note");
  if (!cut) {
    if (note) note.remove();
    return;
  }
  const offer = ctx.canContinue(msg);
  const key = JSON.stringify([offer, ctx.busy()]);
  if (note && note._key === key) return;
  const fresh = el("p", { class: "cut-note" }, el("span", {}, "Cut at the token limit."));
  if (offer) {
    const onclick = () => ctx.onContinue(node._msg);
    const attrs = { type: "button", class: "ghost small", disabled: ctx.busy(), onclick };
    fresh.append(el("button", attrs, "Continue"));
  }
  fresh._key = key;
  if (note) note.replaceWith(fresh);
  else node.querySelector(".bubble").append(fresh);
}

/** Make or update the element of one message. */
export function messageElement(existing, msg, ctx) {
  const node =
    existing ||
    el(
      "li",
      { class: `msg ${msg.role}` },
      el("div", { class: "bubble" }, el("div", { class: "parts" })),
      el("div", { class: "msg-foot" }),
    );
  node._msg = msg;
  node.dataset.status = msg.status || "";
  node.dataset.id = msg.id || "";
  const partsEl = node.querySelector(".parts");
  if (msg.role === "assistant") {
    // Polite and busy while streaming: screen readers read the reply once it settles.
    if (msg.status === "streaming") node.dataset.live = "1";
    if (node.dataset.live) partsEl.setAttribute("aria-live", "polite");
    partsEl.setAttribute("aria-busy", String(msg.status === "streaming"));
  }
  renderParts(partsEl, msg);
  renderCutNote(node, msg, ctx);
  let err = node.querySelector(".msg-error");
  if (msg.error && msg.role === "assistant") {
    if (!err) {
      err = el("p", { class: "msg-error" });
      node.querySelector(".bubble").append(err);
    }
    err.textContent = msg.error;
  } else if (err) err.remove();
  const key = JSON.stringify([
    msg.id,
    msg.status,
    msg.usage,
    msg.sibling_ids,
    msg.model,
    ctx.busy(),
  ]);
  if (node._footKey !== key) {
    node._footKey = key;
    node.querySelector(".msg-foot").replaceChildren(...footer(node, msg, ctx).filter(Boolean));
  }
  return node;
}
