// Opens and closes the sign-in dialog of the Bookinfo product page.
window.addEventListener('DOMContentLoaded', () => {
  const dialog = document.getElementById('login-modal');
  const open = document.getElementById('sign-in-button');
  const close = document.getElementById('close-dialog');
  if (dialog && open) open.addEventListener('click', () => dialog.showModal());
  if (dialog && close) close.addEventListener('click', () => dialog.close());
});
