// M1 Studio page behaviour Gradio has no option for (loaded in <head> by studio/ui/ui.py):
// - accessible names: the composer, the reasoning / statistics toggles of the chat, the chat's trash button;
// - the chat's trash button deletes the open chat, after a confirmation (its label says so);
// - on a phone the sidebar closes after a chat is picked;
// - body.m1-streaming while a reply streams (the composer shows Stop instead of Send): Stop and Answer now show;
// - version links "‹ 2/3 ›" under a message (href "#m1v:<step>:<message id>") call the server through the hidden
//   #m1-version-action textbox.
(() => {
  const PHONE_MAX = 700;

  function nameToggles(root) {
    root.querySelectorAll("#m1-chat .thought-group .title").forEach((title) => {
      const text = (title.innerText || "").trim();
      const kind = /^(Thinking|Thought)/.test(text) ? "reasoning" : "statistics";
      const button = title.querySelector("button");
      const open = !!title.parentElement.querySelector(".content:not([style*='display: none'])");
      if (title.getAttribute("role") === "button" && button) {
        title.removeAttribute("role");  // one control per toggle: the arrow button carries the name
        title.removeAttribute("tabindex");
      }
      if (button) {
        const label = `Show or hide the ${kind}: ${text.split("\n")[0]}`;
        if (button.getAttribute("aria-label") !== label) button.setAttribute("aria-label", label);
        button.setAttribute("aria-expanded", String(open));
      }
    });
  }

  function nameVersionLinks(root) {
    root.querySelectorAll("#m1-chat a[href^='#m1v:']").forEach((link) => {
      const label = link.getAttribute("href").startsWith("#m1v:-1:") ? "Previous version" : "Next version";
      if (link.getAttribute("aria-label") !== label) link.setAttribute("aria-label", label);
      link.removeAttribute("target");
    });
  }

  function nameControls(root) {
    const box = root.querySelector("#m1-composer textarea");
    if (box && box.getAttribute("aria-label") !== "Message") box.setAttribute("aria-label", "Message");
    const trash = root.querySelector("#m1-chat button[aria-label='Clear'], #m1-chat button[data-m1-trash]");
    if (trash && trash.getAttribute("aria-label") !== "Delete this chat") {
      trash.setAttribute("aria-label", "Delete this chat");
      trash.setAttribute("title", "Delete this chat");
      trash.dataset.m1Trash = "1";
    }
    const stop = root.querySelector("#m1-composer .stop-button");
    const streaming = !!(stop && stop.offsetParent !== null);
    document.body.classList.toggle("m1-streaming", streaming);
  }

  // the open chat's menu: a "⋯" button on its row in the list opens "This chat" (rename, export, import, delete)
  // and the share panel
  function placeMenu(root) {
    const list = root.querySelector("#m1-sessions");
    if (!list) return;
    let button = list.querySelector(":scope > .m1-chat-menu");
    const selected = list.querySelector("label.selected");
    if (!button) {
      button = document.createElement("button");
      button.type = "button";
      button.className = "m1-chat-menu";
      button.setAttribute("aria-label", "Chat menu: rename, export, share, delete");
      button.title = "Rename, export, share or delete this chat";
      button.innerHTML = '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">' +
        '<circle cx="5" cy="12" r="2" fill="currentColor"/><circle cx="12" cy="12" r="2" fill="currentColor"/>' +
        '<circle cx="19" cy="12" r="2" fill="currentColor"/></svg>';
      list.appendChild(button);
    }
    button.hidden = !selected;
    if (selected) {
      const top = selected.offsetTop + (selected.offsetHeight - 28) / 2;
      if (button.style.top !== top + "px") button.style.top = top + "px";
    }
  }

  function openPanel(id) {
    const panel = document.querySelector(id);
    if (!panel) return;
    const toggle = panel.querySelector("button.label-wrap, .label-wrap");
    if (toggle && !toggle.classList.contains("open")) toggle.click();
  }

  let queued = false;
  function refresh() {
    queued = false;
    nameControls(document);
    nameToggles(document);
    nameVersionLinks(document);
    placeMenu(document);
  }
  new MutationObserver(() => {
    if (!queued) { queued = true; requestAnimationFrame(refresh); }
  }).observe(document.documentElement, { childList: true, subtree: true, attributes: true,
                                         attributeFilter: ["style", "class"] });

  document.addEventListener("click", (event) => {
    if (event.target.closest("#m1-sessions .m1-chat-menu")) {
      event.preventDefault();
      openPanel("#m1-this-chat");
      openPanel("#m1-share");
      setTimeout(() => {
        const title = document.querySelector("#m1-title textarea, #m1-title input");
        if (title) { title.scrollIntoView({ block: "nearest" }); title.focus(); }
      }, 150);
      return;
    }
    const trash = event.target.closest("#m1-chat button[data-m1-trash]");
    if (trash && !window.confirm("Delete this chat? Its messages and documents are removed.")) {
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    const version = event.target.closest("#m1-chat a[href^='#m1v:']");
    if (version) {
      event.preventDefault();
      event.stopImmediatePropagation();
      const box = document.querySelector("#m1-version-action textarea, #m1-version-action input");
      if (box) {
        box.value = version.getAttribute("href").slice(1) + ":" + Date.now();
        box.dispatchEvent(new Event("input", { bubbles: true }));
      }
      return;
    }
    const picked = event.target.closest("#m1-sessions label, #m1-new");
    if (picked && window.innerWidth < PHONE_MAX) {
      setTimeout(() => {
        const toggle = document.querySelector("#m1-sidebar.open .toggle-button, .sidebar.open .toggle-button");
        if (toggle) toggle.click();
      }, 150);
    }
  }, true);
})();
