// Images to send with the next message: chosen with the attach button, pasted into the
// message box or dropped on the composer. Each shows as a removable thumbnail until
// the message goes; it is sent as a data: URI (the server checks type and size).

import { el } from "./render.js";

const TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export function createAttachments({ list, button, input, dropZone, pasteTarget, showError }) {
  let files = []; // {type: "file", mediaType, url, filename}

  function render() {
    list.hidden = files.length === 0;
    list.replaceChildren(
      ...files.map((file, i) =>
        el(
          "li",
          { class: "attachment" },
          el("img", { src: file.url, alt: file.filename || "Image" }),
          el(
            "button",
            {
              type: "button",
              class: "attachment-remove",
              "aria-label": `Remove ${file.filename || "image"}`,
              onclick: () => {
                files = files.filter((_, j) => j !== i);
                render();
              },
            },
            "×",
          ),
        ),
      ),
    );
  }

  async function add(fileList) {
    for (const file of fileList) {
      if (!TYPES.includes(file.type)) {
        showError(new Error(`${file.name || "That file"} is not a PNG, JPEG, GIF or WebP image`));
        continue;
      }
      try {
        const url = await readAsDataURL(file);
        files.push({ type: "file", mediaType: file.type, url, filename: file.name || undefined });
      } catch (err) {
        showError(err);
      }
    }
    render();
  }

  button.addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    await add(Array.from(input.files || []));
    input.value = ""; // the same file may be chosen again
  });
  pasteTarget.addEventListener("paste", (e) => {
    const pasted = Array.from(e.clipboardData?.files || []).filter((f) => f.type.startsWith("image/"));
    if (pasted.length) {
      e.preventDefault();
      void add(pasted);
    }
  });
  dropZone.addEventListener("dragover", (e) => {
    if (Array.from(e.dataTransfer?.types || []).includes("Files")) {
      e.preventDefault();
      dropZone.classList.add("dropping");
    }
  });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dropping"));
  dropZone.addEventListener("drop", (e) => {
    dropZone.classList.remove("dropping");
    const dropped = Array.from(e.dataTransfer?.files || []);
    if (dropped.length) {
      e.preventDefault();
      void add(dropped);
    }
  });

  return {
    // The files to send, and the composer empty of them.
    take() {
      const taken = files;
      files = [];
      render();
      return taken;
    },
  };
}
