// Publishes one order request to orderstream and waits for its result.
//
// REDIS_URL (default redis://localhost:6379/0) names the Redis; ORDERSTREAM_KEY_ID and
// ORDERSTREAM_KEY_SECRET, when both are set, sign the request. It prints the result JSON
// and exits 0 once the result came, 1 when none came within the timeout, 2 on an error.
import { createHmac, randomBytes } from "node:crypto";
import { createClient } from "redis";

const prefix = process.env.ORDERSTREAM_PREFIX || "orders";
const timeoutMs = Number(process.env.RESULT_TIMEOUT_MS || 30000);
const keyId = process.env.ORDERSTREAM_KEY_ID;
const secret = process.env.ORDERSTREAM_KEY_SECRET;
const signing = Boolean(keyId && secret);

// Amounts are decimal strings: a JavaScript number would not carry 0.01 exactly.
const order = {
  client_order_id: `node-${Date.now().toString(36)}-${randomBytes(5).toString("hex")}`,
  account: "default",
  symbol: "BTCUSDT",
  side: "buy",
  type: "market",
  quantity: "0.01",
};
if (signing) order.issued_at = Date.now(); // epoch ms: a signed request must be fresh
const data = JSON.stringify(order);
const fields = { data };
if (signing) {
  // The signature covers the exact bytes written to the field data.
  fields.key_id = keyId;
  fields.sig = createHmac("sha256", secret).update(data, "utf8").digest("hex");
}

const client = createClient({ url: process.env.REDIS_URL || "redis://localhost:6379/0" });
client.on("error", (err) => {
  console.error("redis:", err.message);
  process.exit(2);
});
await client.connect();
const requestId = await client.xAdd(`${prefix}:pending`, "*", fields);
console.error(`published ${order.client_order_id} as ${requestId}`);

// A result's entry id comes from the same Redis clock, after the request's; read from 5 s
// before it in case that clock stepped back.
const start = `${Math.max(Number(requestId.split("-")[0]) - 5000, 0)}-0`;
const cursors = { [`${prefix}:completed`]: start, [`${prefix}:failed`]: start };
const deadline = Date.now() + timeoutMs;
let result = null;
while (result === null && Date.now() < deadline) {
  // BLOCK 0 would wait for ever: at least 1 ms, at most 1 s at a time.
  const block = Math.max(1, Math.min(deadline - Date.now(), 1000));
  const streams = Object.entries(cursors).map(([key, id]) => ({ key, id }));
  const reply = await client.xRead(streams, { BLOCK: block, COUNT: 1000 });
  for (const { name, messages } of reply ?? []) {
    for (const { id, message } of messages) {
      cursors[name] = id;
      if (message.request_id === requestId) result = message.data;
    }
  }
}
await client.close();
if (result === null) {
  console.error(`no result for ${requestId} within ${timeoutMs} ms`);
  process.exit(1);
}
console.log(result);
