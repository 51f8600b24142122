// A minimal MCP Apps host: MCP client (TypeScript SDK, streamable HTTP) + the official AppBridge.
// The page's query string: theme=light|dark. window.host is what run.mjs drives.
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { AppBridge, PostMessageTransport, getToolUiResourceUri } from "@modelcontextprotocol/ext-apps/app-bridge";

const EXTENSION = "io.modelcontextprotocol/ui";
const MIME = "text/html;profile=mcp-app";
const theme = new URLSearchParams(location.search).get("theme") || "light";
document.body.classList.toggle("dark", theme === "dark");

// What a real host derives from the resource's _meta.ui.csp: only inline code and data:/blob: images and media.
function cspFor(csp = {}) {
  const list = (domains) => (domains || []).join(" ");
  return [
    "default-src 'none'",
    "script-src 'unsafe-inline'",
    "style-src 'unsafe-inline'",
    `img-src data: blob: ${list(csp.resourceDomains)}`.trim(),
    // resourceDomains maps to media-src as well (ext-apps McpUiResourceCsp); local data:/blob: as for images.
    `media-src data: blob: ${list(csp.resourceDomains)}`.trim(),
    `connect-src ${list(csp.connectDomains) || "'none'"}`,
    `frame-src ${list(csp.frameDomains) || "'none'"}`,
    `base-uri ${list(csp.baseUriDomains) || "'none'"}`,
  ].join("; ");
}

async function start() {
  const client = new Client(
    { name: "flux-mcp-test-host", version: "1.0.0" },
    { capabilities: { extensions: { [EXTENSION]: { mimeTypes: [MIME] } } } },
  );
  await client.connect(new StreamableHTTPClientTransport(new URL("/mcp", location.href)));
  const { tools } = await client.listTools();
  const uri = getToolUiResourceUri(tools.find((tool) => tool.name === "generate_image"));
  const resource = (await client.readResource({ uri })).contents[0];
  if (resource.mimeType !== MIME) throw new Error(`unexpected MIME type ${resource.mimeType}`);
  const meta = `<meta http-equiv="Content-Security-Policy" content="${cspFor(resource._meta?.ui?.csp)}">`;

  const iframe = document.createElement("iframe");
  iframe.title = "Flux gallery";
  iframe.sandbox = "allow-scripts allow-forms";
  document.getElementById("frame").append(iframe);

  const bridge = new AppBridge(
    client,
    { name: "flux-mcp-test-host", version: "1.0.0" },
    { openLinks: {}, serverTools: {}, serverResources: {}, logging: {} },
    { hostContext: { theme, displayMode: "inline", platform: "web", locale: "en-US" } },
  );
  const openedLinks = [];
  const sizes = [];
  bridge.onopenlink = async ({ url }) => {
    openedLinks.push(url);
    return {};
  };
  bridge.addEventListener("sizechange", ({ height }) => {
    sizes.push(height);
    if (height) iframe.style.height = `${height}px`;
  });
  const initialized = new Promise((resolve) => bridge.addEventListener("initialized", resolve));
  await bridge.connect(new PostMessageTransport(iframe.contentWindow, iframe.contentWindow));
  iframe.srcdoc = resource.text.replace(/<head>/i, `<head>${meta}`);
  await initialized;

  window.host = {
    tools: tools.map((tool) => tool.name),
    openedLinks,
    sizes,
    // What a host does for a tool call the model made: input, then the result, to the view.
    async run(name, args) {
      await bridge.sendToolInput({ arguments: args });
      const result = await client.callTool({ name, arguments: args });
      await bridge.sendToolResult(result);
      return result.structuredContent;
    },
  };
}

window.hostReady = start().then(
  () => "ok",
  (error) => `host failed: ${error?.stack || error}`,
);
