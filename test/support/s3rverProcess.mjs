// Runs s3rver (an S3-compatible server) in its own Node process for tests. It must run under
// `node --openssl-legacy-provider`: s3rver encrypts ListObjectsV2 continuation tokens with DES, which OpenSSL 3
// only offers through the legacy provider (without it every paged listing answers 500). Vitest workers cannot be
// given that flag per test file, so test/support/s3server.ts spawns this script instead.
// Usage: node --openssl-legacy-provider s3rverProcess.mjs <directory> <bucket>[,<bucket>...]
// Prints one JSON line {"port": N} on stdout once listening on 127.0.0.1 (random port); exits on SIGTERM.
import S3rver from 's3rver';

const [directory, buckets = 'gems'] = process.argv.slice(2);
if (!directory) {
  console.error('usage: s3rverProcess.mjs <directory> <bucket>[,<bucket>...]');
  process.exit(2);
}

const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory,
  silent: true,
  configureBuckets: buckets.split(',').filter(Boolean).map((name) => ({ name, configs: [] })),
});
const address = await server.run();
process.stdout.write(JSON.stringify({ port: address.port }) + '\n');

const stop = () => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(0),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The parent keeps our stdin open; when it dies (even by SIGKILL) stdin ends and we must not linger.
process.stdin.on('end', stop);
process.stdin.resume();
