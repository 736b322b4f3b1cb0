import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export interface Opened {
  page: Page;
  url: string;
  /** Every request the page made, the page itself included. */
  requests: string[];
  consoleErrors: string[];
}

/** Debian's Chromium with a fresh profile, driven by playwright-core; one for all the pictures of a run. */
export class Browser {
  private constructor(
    private readonly context: BrowserContext,
    private readonly dir: string,
  ) {}

  static async start(): Promise<Browser> {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `Chromium is not installed (${CHROMIUM} is missing): the picture tests need it. ` +
          "Install it with: apt-get install -y chromium",
      );
    }
    const dir = mkdtempSync(path.join(tmpdir(), "bf-picture-"));
    const context = await chromium.launchPersistentContext(path.join(dir, "profile"), {
      executablePath: CHROMIUM,
      args: ARGS,
      viewport: { width: 1400, height: 900 },
      offline: true,
    });
    return new Browser(context, dir);
  }

  /** Writes the document to a file and opens it from disk, recording requests and console errors. */
  async open(html: string, name: string): Promise<Opened> {
    const file = path.join(this.dir, `${name}.html`);
    writeFileSync(file, html);
    const url = pathToFileURL(file).href;
    const page = await this.context.newPage();
    const requests: string[] = [];
    const consoleErrors: string[] = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") consoleErrors.push(m.text());
    });
    page.on("pageerror", (e) => consoleErrors.push(e.message));
    await page.goto(url, { waitUntil: "load" });
    return { page, url, requests, consoleErrors };
  }

  async close(): Promise<void> {
    await this.context.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
