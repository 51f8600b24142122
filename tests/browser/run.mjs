// Drives the gallery in headless Chromium through the test host page; prints one JSON report line.
// Usage: node run.mjs <host page URL> <output dir> [<host page URL of a server with a budget>]
// (CHROMIUM = the browser binary). The host page's server also answers POST /control {latency, fault, price}.
import { mkdir } from "node:fs/promises";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [hostUrl, outDir, budgetUrl] = process.argv.slice(2);
const report = { steps: [] };
const step = (name, data = {}) => report.steps.push({ name, ...data });
// Generous: CI machines are shared and sometimes slow; a step that passes takes well under a second.
const STEP_TIMEOUT = 30_000;
let currentFrame = null; // the gallery frame in use, for the failure report

// Every image in the gallery frame, and whether each one has decoded pixels.
const imagesIn = (frame, selector = ".card img") =>
  frame.evaluate((sel) => [...document.querySelectorAll(sel)].map((img) => img.complete && img.naturalWidth), selector);

async function waitForImages(frame, atLeast, selector = ".card img") {
  await frame.waitForFunction(
    ([sel, n]) => {
      const imgs = [...document.querySelectorAll(sel)];
      return imgs.length >= n && imgs.every((img) => img.complete && img.naturalWidth > 0);
    },
    [selector, atLeast],
    { timeout: STEP_TIMEOUT },
  );
  return imagesIn(frame, selector);
}

async function control(page, body) {
  await page.evaluate((b) => fetch("/control", { method: "POST", body: JSON.stringify(b) }), body);
}

async function openHost(context, { theme = "light", width = 900, url = hostUrl } = {}) {
  const page = await context.newPage();
  await page.setViewportSize({ width, height: 900 });
  await page.emulateMedia({ colorScheme: theme });
  page.on("console", (msg) => {
    // The host grants no clipboard-write permission (the resource asks for none): the gallery falls back.
    if (msg.type() === "error" && !/Clipboard API has been blocked/.test(msg.text())) {
      report.console = [...(report.console || []), msg.text()];
    }
  });
  page.on("pageerror", (error) => (report.console = [...(report.console || []), String(error)]));
  await page.goto(`${url}?theme=${theme}`);
  const ready = await page.evaluate(() => window.hostReady);
  if (ready !== "ok") throw new Error(ready);
  const frame = await (await page.$("iframe")).contentFrame();
  currentFrame = frame;
  return { page, frame };
}

// The get_credits section as the gallery shows it: its balance rows and any budget lines with their meters.
async function creditsShown(frame) {
  const heading = frame.locator("section.task h2", { hasText: /^Credits$/ });
  await heading.waitFor({ timeout: STEP_TIMEOUT });
  return frame.evaluate(() => {
    const section = [...document.querySelectorAll("section.task")].find((s) => s.querySelector("h2")?.textContent === "Credits");
    const texts = (selector) => [...section.querySelectorAll(selector)].map((el) => el.textContent);
    const meters = [...section.querySelectorAll(".budget meter")].map((m) => ({ value: m.value, max: m.max, label: m.getAttribute("aria-label") }));
    return { rows: texts("p:not(.budget)"), budget: texts(".budget"), meters };
  });
}

// Chromium paints an iframe only within the viewport, so grow the viewport to the page instead of fullPage.
async function screenshot(page, path) {
  await page.waitForTimeout(250); // let size-changed reach the host
  const { width } = page.viewportSize();
  const height = await page.evaluate(() => document.documentElement.scrollHeight);
  await page.setViewportSize({ width, height });
  await page.waitForTimeout(100);
  await page.screenshot({ path });
}

async function main() {
  await mkdir(outDir, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), "flux-gallery-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    deviceScaleFactor: 1,
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    // 1. Light theme: a real generate_image result, then every per-image action.
    {
      const { page, frame } = await openHost(context);
      report.tools = await page.evaluate(() => window.host.tools);
      const first = await page.evaluate(() =>
        window.host.run("generate_image", { prompt: "a lighthouse on a cliff at dusk, oil painting", count: 2 }),
      );
      const initial = await waitForImages(frame, 2);
      step("generate", { status: first.status, widths: initial });

      await frame.locator(".card button[data-act=vary]").first().click();
      const varied = await waitForImages(frame, initial.length + 1);
      const origins = await frame.locator(".origin").allTextContents();
      step("variations", { widths: varied, origins });

      await frame.locator(".card .thumb").last().click();
      const full = await waitForImages(frame, 1, ".viewer img");
      step("full size", { widths: full });

      await frame.locator(".card button[data-act=open]").first().click();
      await page.waitForFunction(() => window.host.openedLinks.length > 0, null, { timeout: STEP_TIMEOUT });
      step("open file", { links: await page.evaluate(() => window.host.openedLinks) });

      const copy = frame.locator(".card button[data-act=copy]").first();
      await copy.click();
      await frame.waitForFunction(() => /Copied|Select/.test(document.querySelector("[data-act=copy]").textContent));
      step("copy url", { label: await copy.textContent(), manual: await frame.locator(".manual").count() });

      await frame.locator(".card button[data-act=edit]").last().click();
      await frame.locator("form.edit input").fill("make the sky stormy");
      await frame.locator("form.edit button[type=submit]").click();
      const edited = await waitForImages(frame, varied.length + 1);
      step("edit", { widths: edited, origins: await frame.locator(".origin").allTextContents() });

      await screenshot(page, join(outDir, "gallery.png"));
      await page.close();
    }

    // 2. Dark theme (host context and prefers-color-scheme).
    {
      const { page, frame } = await openHost(context, { theme: "dark" });
      await page.evaluate(() => window.host.run("generate_image", { prompt: "neon koi fish in a night pond", count: 3 }));
      const widths = await waitForImages(frame, 3);
      const colors = await frame.evaluate(() => ({
        theme: document.documentElement.dataset.theme,
        background: getComputedStyle(document.body).backgroundColor,
      }));
      step("dark", { widths, ...colors });
      await screenshot(page, join(outDir, "gallery-dark.png"));
      await page.close();
    }

    // 3. Narrow (360 px): a pending result; the view keeps waiting with get_task, the clock ticks.
    {
      const { page, frame } = await openHost(context, { width: 360 });
      await control(page, { latency: 2.5 });
      const pending = await page.evaluate(() =>
        window.host.run("generate_image", { prompt: "a paper boat on a rainy street", count: 2, wait_seconds: 0 }),
      );
      await frame.waitForFunction(() => document.querySelector(".badge.pending time")?.textContent === "1 s", null, {
        timeout: STEP_TIMEOUT,
      });
      await page.screenshot({ path: join(outDir, "gallery-pending.png") });
      const widths = await waitForImages(frame, 2);
      await control(page, { latency: 0.3 });
      const columns = await frame.evaluate(
        () => getComputedStyle(document.querySelector(".grid")).gridTemplateColumns.split(" ").length,
      );
      const overflow = await frame.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
      step("pending then done", { status: pending.status, widths, columns, overflow });
      await screenshot(page, join(outDir, "gallery-narrow.png"));
      await page.close();
    }

    // 4. A failed task shows its error; list_tasks is a history grid whose tiles open tasks.
    {
      const { page, frame } = await openHost(context);
      await control(page, { fault: "fail_task" });
      const failed = await page.evaluate(() => window.host.run("generate_image", { prompt: "this one fails" }));
      await frame.waitForSelector(".error", { timeout: STEP_TIMEOUT });
      step("failed", { status: failed.status, error: await frame.locator(".error").first().textContent() });
      await page.close();
    }
    {
      const { page, frame } = await openHost(context);
      const listing = await page.evaluate(() => window.host.run("list_tasks", { limit: 12 }));
      const thumbs = await waitForImages(frame, 3, ".tile img");
      await frame.locator(".tile[data-status=succeeded]").first().click();
      const opened = await waitForImages(frame, 1, ".card img");
      step("history", { tasks: listing.tasks.length, thumbs, opened });
      await screenshot(page, join(outDir, "gallery-history.png"));
      await page.close();
    }
    // 5. A video result plays: the poster first, then the MP4 itself loads and its clock moves.
    {
      const { page, frame } = await openHost(context);
      const video = await page.evaluate(() => window.host.run("generate_video", { prompt: "a paper boat on a rainy street" }));
      await frame.waitForFunction(() => document.querySelector(".card video")?.readyState >= 2, null, { timeout: STEP_TIMEOUT });
      await frame.evaluate(() => document.querySelector(".card video").play());
      await frame.waitForFunction(() => document.querySelector(".card video").currentTime > 0, null, { timeout: STEP_TIMEOUT });
      const played = await frame.evaluate(() => {
        const player = document.querySelector(".card video");
        return { readyState: player.readyState, currentTime: player.currentTime, duration: player.duration, width: player.videoWidth, poster: player.poster.startsWith("data:image/"), src: player.src.slice(0, 5) };
      });
      step("video", { status: video.status, kind: video.kind, ...played });
      await screenshot(page, join(outDir, "gallery-video.png"));
      await page.close();
    }
    // 6. get_credits: the balance; no budget line where the server keeps none.
    {
      const { page, frame } = await openHost(context);
      const credits = await page.evaluate(() => window.host.run("get_credits", {}));
      step("credits", { budget_field: credits.budget ?? null, shown: await creditsShown(frame) });
      await page.close();
    }
    // 7. On a server with a per-person budget, after one job (the last: it sets the price): the caller's budget.
    if (budgetUrl) {
      const { page, frame } = await openHost(context, { url: budgetUrl });
      await control(page, { price: 0.123456 });
      await page.evaluate(() => window.host.run("generate_image", { prompt: "a lantern in the snow", count: 1 }));
      await waitForImages(frame, 1);
      const credits = await page.evaluate(() => window.host.run("get_credits", {}));
      step("budget", { budget_field: credits.budget ?? null, shown: await creditsShown(frame) });
      await screenshot(page, join(outDir, "gallery-credits.png"));
      await page.close();
    }
  } catch (error) {
    report.error = String(error?.stack || error);
    // What the gallery itself showed at that moment: status bars and error messages.
    report.shown = await currentFrame
      ?.evaluate(() => [...document.querySelectorAll(".bar, .error, .status")].map((el) => el.textContent))
      .catch(() => null);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  console.log(JSON.stringify(report));
  process.exitCode = report.error ? 1 : 0;
}

await main();
