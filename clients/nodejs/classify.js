// A client of genet.v1.Classifier in another language, written from the .proto alone:
//   npm install && node classify.js HOST:PORT ../../protos/genet/v1/classifier.proto IMAGE
// Prints the model info, the image's top 3 as JSON, and the services found by reflection.
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { GrpcReflection } = require('grpc-js-reflection-client');

const [target, protoPath, imagePath] = process.argv.slice(2);
const genet = grpc.loadPackageDefinition(protoLoader.loadSync(protoPath, { keepCase: true, defaults: true })).genet.v1;
const client = new genet.Classifier(target, grpc.credentials.createInsecure());
const deadline = () => Date.now() + 30000;

function call(method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, { deadline: deadline() }, (error, reply) => (error ? reject(error) : resolve(reply))));
}

async function main() {
  const info = await call('GetModelInfo', {});
  console.log(JSON.stringify({ name: info.name, version: info.version, num_classes: info.num_classes,
                               labels: info.labels, backend: info.backend }));
  const reply = await call('Classify', { images: [fs.readFileSync(imagePath)], top_k: 3 });
  console.log(JSON.stringify(reply.results[0].predictions));
  const services = await new GrpcReflection(target, grpc.credentials.createInsecure()).listServices();
  console.log(JSON.stringify(services));
}

main().then(() => process.exit(0), (error) => { console.error(`error: ${error.message}`); process.exit(1); });
