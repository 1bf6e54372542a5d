// Validates what kubernetes-validate has no schema for, with the
// kubernetes-models packages: KEDA ScaledObjects, Prometheus Operator
// ServiceMonitors, and the alert rules (as a PrometheusRule's spec) and the
// scrape configuration. Usage: node validate-objects.mjs RENDERED.yaml...
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": ScaledObject,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
};
const here = new URL(".", import.meta.url).pathname;
let failures = 0;
let checked = 0;
function check(where, what, fn) {
  try {
    fn();
    checked++;
    console.log(`ok   ${where}: ${what}`);
  } catch (e) {
    failures++;
    console.error(`FAIL ${where}: ${what}: ${e.message}`);
  }
}

for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc) continue;
    const key = `${doc.apiVersion}/${doc.kind}`;
    const Model = models[key];
    if (Model) check(file, `${doc.kind}/${doc.metadata?.name}`, () => new Model(doc).validate());
    else if (!/^(v1|[a-z.]*k8s\.io\/v\d+|apps\/v1|policy\/v1|batch\/v1)$/.test(doc.apiVersion ?? "")) {
      failures++;
      console.error(`FAIL ${file}: ${key} has no validator here nor in kubernetes-validate`);
    }
  }
}

const rules = yaml.load(readFileSync(`${here}prometheus/alerts.yaml`, "utf8"));
check("prometheus/alerts.yaml", "as a PrometheusRule", () =>
  new PrometheusRule({ apiVersion: "monitoring.coreos.com/v1", kind: "PrometheusRule", metadata: { name: "latchkey" }, spec: rules }).validate(),
);
check("prometheus/alerts.yaml", "every alert has an expr, a duration, a severity and a description", () => {
  for (const group of rules.groups) {
    for (const r of group.rules) {
      if (!r.alert || !r.expr || !/^\d+[smh]$/.test(r.for ?? "") || !r.labels?.severity || !r.annotations?.description) {
        throw new Error(`rule ${JSON.stringify(r.alert ?? r)} is incomplete`);
      }
    }
  }
});
const scrape = yaml.load(readFileSync(`${here}prometheus/scrape.yaml`, "utf8"));
check("prometheus/scrape.yaml", "one job named latchkey that loads alerts.yaml", () => {
  const jobs = scrape.scrape_configs.map((c) => c.job_name);
  if (jobs.join() !== "latchkey") throw new Error(`jobs: ${jobs}`);
  if (!scrape.rule_files.includes("alerts.yaml")) throw new Error("alerts.yaml is not loaded");
});

console.log(`${checked} checked, ${failures} failed`);
process.exit(failures ? 1 : 0);
