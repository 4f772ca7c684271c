// GraphiQL in a real headless browser (Debian's chromium), offline: every request the page makes
// to anything but the instance is refused and reported. The page must render, run a query typed
// into its editor, and show the result.
//
//   node docs/clients/graphiql.mjs http://127.0.0.1:14021
import puppeteer from "puppeteer-core";

const base = process.argv[2];
if (!base) {
  console.error("usage: node graphiql.mjs BASE_URL");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const origin = new URL(base).origin;

const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  // As root in a container chromium needs --no-sandbox; nothing but the local page is loaded.
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const failures = [];
try {
  const page = await browser.newPage();
  const elsewhere = [];
  await page.setRequestInterception(true);
  page.on("request", (request) => {
    const url = request.url();
    if (url.startsWith(origin) || url.startsWith("data:")) {
      request.continue();
    } else {
      elsewhere.push(url);
      request.abort("internetdisconnected");
    }
  });
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("response", (answer) => {
    if (answer.status() >= 400) problems.push(`${answer.status()} for ${answer.url()}`);
  });
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });

  const response = await page.goto(`${base}/graphql`, { waitUntil: "networkidle0" });
  if (response.status() !== 200) failures.push(`GET /graphql answered ${response.status()}`);
  await page.waitForSelector(".graphiql-execute-button", { timeout: 20000 });

  // Replace the editor's text with a query of our own, then run it.
  await page.click(".graphiql-query-editor .CodeMirror");
  await page.keyboard.down("Control");
  await page.keyboard.press("KeyA");
  await page.keyboard.up("Control");
  await page.keyboard.press("Backspace");
  await page.keyboard.type("{ __type(name: \"Visit\") { name } }");
  await page.click(".graphiql-execute-button");
  await page.waitForFunction(
    () => document.querySelector(".result-window")?.innerText.includes('"name": "Visit"'),
    { timeout: 20000 },
  );
  const shown = await page.$eval(".result-window", (element) => element.innerText);

  if (elsewhere.length > 0) failures.push(`requests off the instance: ${elsewhere.join(", ")}`);
  failures.push(...problems);
  if (failures.length === 0) {
    console.log(`graphiql: ok (rendered offline, ran a query, showed ${JSON.stringify(shown.replace(/\s+/g, " ").trim())})`);
  }
} catch (error) {
  failures.push(String(error));
} finally {
  await browser.close();
}
if (failures.length > 0) {
  console.error(`graphiql: FAILED\n  ${failures.join("\n  ")}`);
  process.exit(1);
}
