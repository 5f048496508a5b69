// The REST form's placeholders: a click inserts one at the cursor of the
// text field last focused. Without script the buttons do nothing and the
// placeholders can still be copied.
"use strict";
let last = null;
document.addEventListener("focusin", (e) => {
  if (e.target.matches("input[type=text], textarea")) last = e.target;
});
for (const button of document.querySelectorAll("button[data-placeholder]")) {
  button.addEventListener("click", () => {
    if (!last) return;
    const start = last.selectionStart ?? last.value.length;
    const end = last.selectionEnd ?? start;
    last.setRangeText(button.dataset.placeholder, start, end, "end");
    last.focus();
  });
}
