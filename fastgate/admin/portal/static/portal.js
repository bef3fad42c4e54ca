// FastGate developer portal: small progressive enhancements; every page works without it.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const q = document.getElementById("q");
  if (q) {
    const cards = Array.from(document.querySelectorAll("[data-search]"));
    const filter = () => {
      const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
      for (const card of cards) {
        const text = card.getAttribute("data-search");
        card.classList.toggle("hidden", !words.every((w) => text.includes(w)));
      }
    };
    q.addEventListener("input", filter);
    filter();
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  }
  const copy = document.getElementById("copy-key");
  if (copy) {
    copy.addEventListener("click", () => {
      const key = document.getElementById("api-key").textContent;
      navigator.clipboard.writeText(key).then(() => { copy.textContent = "Copied"; });
    });
  }
});
