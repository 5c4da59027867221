// Markdown for model output, which is untrusted: marked parses it, raw HTML in it is shown
// as text (never parsed), and DOMPurify cleans the result as a second line of defence.

import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.js";

const escapeHtml = (s) =>
  s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c],
  );

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    // A model writing "<script>" or "<img onerror>" gets exactly that text on screen.
    html: ({ text }) => escapeHtml(text),
  },
});

// Images would let a prompt-injected answer load (and leak data to) any URL: links only.
const PURIFY = {
  FORBID_TAGS: [
    "img",
    "style",
    "form",
    "input",
    "button",
    "textarea",
    "select",
    "iframe",
    "svg",
    "math",
  ],
  FORBID_ATTR: ["style"],
};

// Classes only as marked writes them on code ("language-py"), to label the block.
DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  if (data.attrName !== "class") return;
  if (!(node.tagName === "CODE" && /^language-[\w#+.-]{1,30}$/.test(data.attrValue))) {
    data.keepAttr = false;
  }
});

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});

/** Render Markdown into `el`, adding a header with the language and a copy button to code. */
export function renderMarkdown(el, text) {
  const html = DOMPurify.sanitize(marked.parse(text, { async: false }), PURIFY);
  el.innerHTML = html;
  for (const pre of el.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (!code) continue;
    const head = document.createElement("div");
    head.className = "code-head";
    const lang = document.createElement("span");
    lang.textContent = (code.className.match(/^language-(.+)$/) || [])[1] || "code";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "ghost small";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    copy.addEventListener("click", () => copyText(copy, code.textContent));
    head.append(lang, copy);
    const wrap = document.createElement("div");
    wrap.className = "code-block";
    pre.replaceWith(wrap);
    wrap.append(head, pre);
  }
}

export async function copyText(button, text) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
}
