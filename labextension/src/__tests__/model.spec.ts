import { DeployModel, Request } from '../model';
import { IDeploymentInfo, IModelInfo } from '../types';

const churn: IModelInfo = {
  name: 'churn',
  aliases: { champion: 1 },
  versions: [
    {
      version: 2,
      aliases: [],
      created: 2,
      flavor: 'sklearn',
      task: 'classification',
      description: '',
      test: null,
      job_run: 'a1b2'
    },
    {
      version: 1,
      aliases: ['champion'],
      created: 1,
      flavor: 'sklearn',
      task: 'classification',
      description: '',
      test: { passed: true, metric: 'accuracy', score: 0.9, time: 1, failed_checks: [] },
      job_run: null
    }
  ],
  history: []
};

function deployment(requests: number): IDeploymentInfo {
  return {
    name: 'churn',
    ref: 'churn@champion',
    url: 'http://127.0.0.1:5000',
    pid: 1,
    status: 'running',
    error: null,
    version: 1,
    alias: 'champion',
    requests,
    rejected: 0,
    predictions: requests,
    error_rate: 0,
    split: {},
    shadow: [],
    warnings: [],
    drift: null,
    alerts: []
  };
}

/** A fake server: answers GETs from `state`, records POSTs, fails on demand. */
function fakeServer() {
  const server = {
    requests: 10,
    fail: null as string | null,
    posts: [] as { endPoint: string; body: any }[],
    postError: null as string | null,
    calls: 0,
    request: (async (endPoint: string, init: RequestInit = {}) => {
      server.calls++;
      if (init.method === 'POST') {
        server.posts.push({ endPoint, body: JSON.parse(String(init.body)) });
        if (server.postError) {
          throw new Error(server.postError);
        }
        return {};
      }
      if (server.fail) {
        throw new Error(server.fail);
      }
      if (endPoint === 'models') {
        return { home: '/tmp/home', models: [churn] };
      }
      return { home: '/tmp/home', deployments: [deployment(server.requests)] };
    }) as Request
  };
  return server;
}

describe('DeployModel', () => {
  let model: DeployModel;
  afterEach(() => model?.dispose());

  it('loads models and deployments and signals the change', async () => {
    const server = fakeServer();
    model = new DeployModel({ request: server.request });
    let changes = 0;
    model.changed.connect(() => changes++);
    await model.refresh();
    expect(model.loaded).toBe(true);
    expect(model.models.map(m => m.name)).toEqual(['churn']);
    expect(model.deployments[0].version).toBe(1);
    expect(model.home).toBe('/tmp/home');
    expect(model.error).toBeNull();
    expect(changes).toBe(1);
  });

  it('keeps a failure for the view and clears it when the server answers again', async () => {
    const server = fakeServer();
    model = new DeployModel({ request: server.request });
    server.fail = 'cannot reach the Jupyter server';
    await model.refresh();
    expect(model.error).toBe('cannot reach the Jupyter server');
    expect(model.loaded).toBe(false);
    server.fail = null;
    await model.refresh();
    expect(model.error).toBeNull();
    expect(model.models).toHaveLength(1);
  });

  it('keeps the last good data while failing', async () => {
    const server = fakeServer();
    model = new DeployModel({ request: server.request });
    await model.refresh();
    server.fail = 'boom';
    await model.refresh();
    expect(model.error).toBe('boom');
    expect(model.models).toHaveLength(1);
  });

  it('computes the request rate between two polls', async () => {
    const server = fakeServer();
    let now = 1_000_000;
    model = new DeployModel({ request: server.request, now: () => now });
    await model.refresh();
    expect(model.rate('churn')).toBeNull();
    server.requests = 60;
    now += 10_000;
    await model.refresh();
    expect(model.rate('churn')).toBeCloseTo(5);
  });

  it('does not poll while the panel is hidden', async () => {
    const server = fakeServer();
    model = new DeployModel({ request: server.request });
    model.active = false;
    await model.refresh();
    expect(server.calls).toBe(0);
    model.active = true; // showing the panel refreshes at once
    await new Promise(resolve => setTimeout(resolve, 50));
    expect(server.calls).toBe(2);
  });

  it('posts promote, rollback and stop, then refreshes', async () => {
    const server = fakeServer();
    model = new DeployModel({ request: server.request });
    await model.promote('churn', 2, 'champion', true);
    await model.rollback('churn', 'champion');
    await model.stop('churn');
    expect(server.posts).toEqual([
      {
        endPoint: 'models/churn/promote',
        body: { version: 2, alias: 'champion', force: true }
      },
      { endPoint: 'models/churn/rollback', body: { alias: 'champion' } },
      { endPoint: 'deployments/churn/stop', body: {} }
    ]);
    await new Promise(resolve => setTimeout(resolve, 50));
    expect(model.loaded).toBe(true);
  });

  it("rejects an action with the server's message", async () => {
    const server = fakeServer();
    model = new DeployModel({ request: server.request });
    server.postError = 'churn/2 never tested; run nd.test on it first';
    await expect(model.promote('churn', 2, 'champion')).rejects.toThrow(/never tested/);
  });

  it('encodes names in URLs', async () => {
    const server = fakeServer();
    model = new DeployModel({ request: server.request });
    await model.stop('a b');
    expect(server.posts[0].endPoint).toBe('deployments/a%20b/stop');
  });
});
