// A client of genet.v1.Classifier in another language, written from the .proto alone:
//   npm install && node classify.js HOST:PORT ../../protos/genet/v1/classifier.proto IMAGE
// Prints the model info, the image's top 3 as JSON, the answers of a ClassifyStream carrying the image
// and a request that is not an image, and the services found by reflection.
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { GrpcReflection } = require('grpc-js-reflection-client');

const [target, protoPath, imagePath] = process.argv.slice(2);
const options = { keepCase: true, defaults: true, oneofs: true }; // oneofs: which field of `outcome` is set
const genet = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath, options)).genet.v1;
const client = new genet.Classifier(target, grpc.credentials.createInsecure());
const deadline = () => Date.now() + 30000;

function call(method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, { deadline: deadline() }, (error, reply) => (error ? reject(error) : resolve(reply))));
}

// Requests over one ClassifyStream call; resolves with every response once the server ends the stream.
function stream(requests) {
  return new Promise((resolve, reject) => {
    const call = client.ClassifyStream({ deadline: deadline() });
    const responses = [];
    call.on('data', (response) => responses.push(response));
    call.on('error', reject);
    call.on('end', () => resolve(responses));
    requests.forEach((request) => call.write(request));
    call.end();
  });
}

async function main() {
  const info = await call('GetModelInfo', {});
  console.log(JSON.stringify({ name: info.name, version: info.version, num_classes: info.num_classes,
                               labels: info.labels, backend: info.backend }));
  const reply = await call('Classify', { images: [fs.readFileSync(imagePath)], top_k: 3 });
  console.log(JSON.stringify(reply.results[0].predictions));
  const streamed = await stream([{ images: [fs.readFileSync(imagePath)], top_k: 3, request_id: 'image' },
                                 { images: [Buffer.from('no image')], request_id: 'bad' }]);
  console.log(JSON.stringify(streamed.map((r) => ({ request_id: r.request_id, outcome: r.outcome,
    predictions: r.outcome === 'response' ? r.response.results[0].predictions : null, error: r.error }))));
  const services = await new GrpcReflection(target, grpc.credentials.createInsecure()).listServices();
  console.log(JSON.stringify(services));
}

main().then(() => process.exit(0), (error) => { console.error(`error: ${error.message}`); process.exit(1); });
