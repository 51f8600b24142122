// The TypeScript SDK 1.x client as VS Code-style hosts use it (protocol 2025-11-25, in-core Tasks),
// driven one command at a time by tests/clients/test_typescript_tasks.py.
//
// stdin: JSON lines. The first is how to connect: {"transport": "stdio", "command", "args", "env"} or
// {"transport": "http", "url", "token"}. Each later line is one command {"op", ...}; every command is
// answered by exactly one line {"ok": true, "value"} or {"ok": false, "error": {"code", "message"}},
// which a stream command precedes with one {"event": type, ...} line per message it receives.
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema, CreateTaskResultSchema } from '@modelcontextprotocol/sdk/types.js';

const write = (line) => process.stdout.write(JSON.stringify(line) + '\n');

function transportFor(how) {
  if (how.transport === 'stdio') {
    return new StdioClientTransport({ command: how.command, args: how.args, env: how.env, stderr: 'inherit' });
  }
  const headers = how.token ? { Authorization: `Bearer ${how.token}` } : {};
  return new StreamableHTTPClientTransport(new URL(how.url), { requestInit: { headers } });
}

const failure = (error) => ({ ok: false, error: { code: error?.code ?? null, message: String(error?.message ?? error) } });

async function run(client, command) {
  const tasks = client.experimental.tasks;
  switch (command.op) {
    case 'capabilities':
      return { server: client.getServerCapabilities() ?? null };
    case 'listTools': {
      const { tools } = await client.listTools();
      return tools.map((tool) => ({ name: tool.name, execution: tool.execution ?? null }));
    }
    case 'callToolStream': {
      // The SDK itself decides to make it a task: the tool said taskSupport "optional" and the server
      // declared tasks.requests.tools.call.
      for await (const message of tasks.callToolStream({ name: command.name, arguments: command.arguments })) {
        if (message.type === 'error') throw message.error;
        if (message.type === 'result') return message.result;
        write({ event: message.type, task: message.task });
      }
      throw new Error('the stream ended without a result');
    }
    case 'createTask': // tools/call with params.task, the answer being the task itself
      return client.request(
        { method: 'tools/call', params: { name: command.name, arguments: command.arguments, task: command.task ?? {} } },
        CreateTaskResultSchema,
      );
    case 'callTool': // an ordinary call, no task
      return client.callTool({ name: command.name, arguments: command.arguments });
    case 'getTask':
      return tasks.getTask(command.taskId);
    case 'getTaskResult':
      return tasks.getTaskResult(command.taskId, CallToolResultSchema);
    case 'listTasks':
      return tasks.listTasks(command.cursor);
    case 'cancelTask':
      return tasks.cancelTask(command.taskId);
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const how = JSON.parse((await lines.next()).value);
const client = new Client({ name: 'ts-sdk-tasks', version: '1.0.0' }, { capabilities: {} });
try {
  await client.connect(transportFor(how));
  write({ ok: true, value: { connected: true } });
} catch (error) {
  write(failure(error));
  process.exit(1);
}
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  if (command.op === 'close') break;
  try {
    write({ ok: true, value: await run(client, command) });
  } catch (error) {
    write(failure(error));
  }
}
await client.close();
process.exit(0); // stdin stays open on the driving side: do not wait for it
