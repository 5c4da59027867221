// The sidebar: the list of chats (newest first, older pages on demand), rename, delete,
// and on phones its open/closed state. It reads the page's state and reports through hooks.

import { api } from "./api.js";
import { el, icon } from "./render.js";

export function chatTitle(chat) {
  return chat.title || "New chat";
}

/** hooks: showError(err), onRenamed(chat), onDeleted(chat). */
export function createSidebar(ui, state, hooks) {
  function renderChatList() {
    const rows = state.chats.map(chatRow);
    if (!rows.length) rows.push(el("li", { class: "no-chats" }, "No chats yet"));
    ui.chatList.replaceChildren(...rows);
    ui.moreChats.hidden = !state.nextCursor;
  }

  function chatRow(chat) {
    const current = state.chat && state.chat.id === chat.id;
    const link = el(
      "a",
      { href: `#/chat/${chat.id}`, class: "chat-link", "aria-current": current ? "page" : null },
      chatTitle(chat),
    );
    const rename = el("button", {
      type: "button",
      class: "icon-btn",
      "aria-label": `Rename chat ${chatTitle(chat)}`,
      title: "Rename",
      html: icon("edit"),
    });
    const del = el("button", {
      type: "button",
      class: "icon-btn",
      "aria-label": `Delete chat ${chatTitle(chat)}`,
      title: "Delete",
      html: icon("trash"),
    });
    const row = el(
      "li",
      { class: `chat-item${current ? " current" : ""}` },
      link,
      el("div", { class: "row-actions" }, rename, del),
    );
    rename.addEventListener("click", () => renameRow(row, chat));
    del.addEventListener("click", () => confirmDelete(row, chat));
    return row;
  }

  function renameRow(row, chat) {
    const input = el("input", {
      type: "text",
      class: "rename",
      value: chat.title || "",
      "aria-label": "Chat title",
      maxlength: "500",
    });
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== chat.title) {
        try {
          const updated = await api.updateChat(chat.id, { title });
          Object.assign(chat, updated);
          hooks.onRenamed(chat);
        } catch (err) {
          hooks.showError(err);
        }
      }
      renderChatList();
      ui.chatList.querySelector(`a[href="#/chat/${chat.id}"]`)?.focus();
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      else if (e.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
    row.replaceChildren(input);
    input.focus();
    input.select();
  }

  function confirmDelete(row, chat) {
    const yes = el("button", { type: "button", class: "danger small" }, "Delete");
    const no = el("button", { type: "button", class: "ghost small" }, "Cancel");
    row.replaceChildren(
      el("span", { class: "confirm-text" }, `Delete “${chatTitle(chat)}”?`),
      yes,
      no,
    );
    no.addEventListener("click", renderChatList);
    yes.addEventListener("click", async () => {
      try {
        await api.deleteChat(chat.id);
        state.chats = state.chats.filter((c) => c.id !== chat.id);
        hooks.onDeleted(chat);
        renderChatList();
        ui.newChat.focus();
      } catch (err) {
        hooks.showError(err);
        renderChatList();
      }
    });
    yes.focus();
  }

  async function loadChats(more = false) {
    try {
      // A refresh keeps as many rows as are shown, so older chats loaded stay in the list.
      const limit = more ? 30 : Math.min(200, Math.max(30, state.chats.length));
      const page = await api.listChats(more ? state.nextCursor : null, limit);
      state.chats = more ? [...state.chats, ...page.items] : page.items;
      state.nextCursor = page.next_cursor;
      renderChatList();
    } catch (err) {
      hooks.showError(err);
    }
  }

  function setSidebar(open) {
    ui.app.classList.toggle("sidebar-open", open);
    ui.menu.setAttribute("aria-expanded", String(open));
    ui.backdrop.hidden = !open;
    // On a phone the sidebar covers the page: take focus into it while it is open.
    if (open) ui.newChat.focus();
  }

  ui.menu.innerHTML = icon("menu");
  ui.menu.addEventListener("click", () => setSidebar(!ui.app.classList.contains("sidebar-open")));
  ui.backdrop.addEventListener("click", () => setSidebar(false));
  ui.moreChats.addEventListener("click", () => loadChats(true));
  ui.chatList.addEventListener("click", (e) => {
    if (e.target.closest("a")) setSidebar(false);
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ui.app.classList.contains("sidebar-open")) {
      setSidebar(false);
      ui.menu.focus();
    }
  });

  return { render: renderChatList, load: loadChats, setOpen: setSidebar };
}
