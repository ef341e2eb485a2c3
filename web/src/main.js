// Tally's dashboard: sign in with Firebase Auth; admins (custom claim admin: true) get the admin
// page, everyone else their own usage page, live.
import { onAuthStateChanged, signInWithEmailAndPassword, signOut } from "firebase/auth";
import { AdminPage } from "./admin.js";
import { hooks, setStatus } from "./dom.js";
import { connect } from "./firebase.js";
import { currentMonth } from "./format.js";
import { UserPage } from "./userpage.js";

const h = hooks(document.body);

function showSignIn(visible) {
  h["sign-in"].hidden = !visible;
  h.controls.hidden = visible;
}

async function main() {
  const { auth, db, api } = await connect();
  const month = () => (/^\d{4}-\d{2}$/.test(h.month.value) ? h.month.value : currentMonth());
  h.month.value = currentMonth();
  h.month.max = currentMonth();
  const admin = new AdminPage({ root: h["admin-page"], db, api, month });
  const user = new UserPage({ root: h["user-page"], db, api, month });
  let active = null;

  h.month.addEventListener("change", () => {
    if (/^\d{4}-\d{2}$/.test(h.month.value)) active?.monthChanged();
  });
  h["sign-out"].addEventListener("click", () => signOut(auth));
  h["sign-in"].addEventListener("submit", async (event) => {
    event.preventDefault();
    h["sign-in-error"].textContent = "";
    h["sign-in-submit"].disabled = true;
    try {
      await signInWithEmailAndPassword(auth, h.email.value, h.password.value);
    } catch (error) {
      h["sign-in-error"].textContent = `Sign-in failed: ${error.code ?? error.message}`;
    } finally {
      h["sign-in-submit"].disabled = false;
    }
  });

  onAuthStateChanged(auth, async (signedIn) => {
    active?.stop();
    active = null;
    h.who.textContent = signedIn ? signedIn.email ?? signedIn.uid : "";
    if (!signedIn) {
      h.role.textContent = "";
      setStatus(h["app-status"], null, "ready");
      showSignIn(true);
      return;
    }
    showSignIn(false);
    setStatus(h["app-status"], null, "loading", "Checking your account…");
    let isAdmin = false;
    try {
      isAdmin = (await signedIn.getIdTokenResult()).claims.admin === true;
    } catch (error) {
      setStatus(h["app-status"], null, "error", `Could not read your account: ${error.message}`);
      return;
    }
    if (auth.currentUser !== signedIn) return; // signed out or in as someone else meanwhile
    setStatus(h["app-status"], null, "ready");
    h.role.textContent = isAdmin ? "admin" : "";
    h.role.hidden = !isAdmin;
    active = isAdmin ? admin : user;
    document.body.dataset.page = isAdmin ? "admin" : "user";
    active.start(signedIn);
  });
}

main().catch((error) => {
  setStatus(h["app-status"], null, "error", `The dashboard could not start: ${error.message}`);
});
