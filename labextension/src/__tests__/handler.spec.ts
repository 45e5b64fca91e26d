import { ServerConnection } from '@jupyterlab/services';

import { RequestError, requestAPI } from '../handler';

function settingsWith(fetch: jest.Mock): ServerConnection.ISettings {
  return ServerConnection.makeSettings({
    baseUrl: 'http://127.0.0.1:8888/lab-base/',
    fetch: fetch as any
  });
}

function answer(status: number, body: string, type = 'application/json'): Response {
  return new Response(body, { status, headers: { 'Content-Type': type } });
}

describe('requestAPI', () => {
  it('GETs under /nbdeploy/api/ and decodes the JSON', async () => {
    const fetch = jest.fn().mockResolvedValue(answer(200, '{"models": []}'));
    const data = await requestAPI<{ models: unknown[] }>('models', {}, settingsWith(fetch));
    expect(data).toEqual({ models: [] });
    const request = fetch.mock.calls[0][0] as Request;
    // GETs carry a cache-busting query
    expect(request.url).toMatch(/^http:\/\/127\.0\.0\.1:8888\/lab-base\/nbdeploy\/api\/models(\?\d+)?$/);
    expect(request.method).toBe('GET');
  });

  it('sends a POST body as given', async () => {
    const fetch = jest.fn().mockResolvedValue(answer(200, '{"name": "churn"}'));
    await requestAPI(
      'models/churn/promote',
      { method: 'POST', body: JSON.stringify({ version: 2, alias: 'champion' }) },
      settingsWith(fetch)
    );
    const request = fetch.mock.calls[0][0] as Request;
    expect(request.method).toBe('POST');
    expect(await request.json()).toEqual({ version: 2, alias: 'champion' });
  });

  it("rejects with the server's message and status", async () => {
    const fetch = jest
      .fn()
      .mockResolvedValue(answer(409, '{"message": "churn/2 never tested; run nd.test"}'));
    const failure = requestAPI('models/churn/promote', { method: 'POST' }, settingsWith(fetch));
    await expect(failure).rejects.toThrow('churn/2 never tested; run nd.test');
    await expect(failure).rejects.toMatchObject({ status: 409 });
    await expect(failure).rejects.toBeInstanceOf(RequestError);
  });

  it('says the server extension is missing on a plain 404 page', async () => {
    const fetch = jest.fn().mockResolvedValue(answer(404, '<html>404</html>', 'text/html'));
    await expect(requestAPI('models', {}, settingsWith(fetch))).rejects.toThrow(
      /server extension is not enabled/
    );
  });

  it('names the status when an error has no message', async () => {
    const fetch = jest.fn().mockResolvedValue(answer(502, ''));
    await expect(requestAPI('deployments', {}, settingsWith(fetch))).rejects.toThrow(
      /^502 .*deployments/
    );
  });

  it('turns a network failure into a RequestError with status 0', async () => {
    const fetch = jest.fn().mockRejectedValue(new TypeError('Failed to fetch'));
    const failure = requestAPI('models', {}, settingsWith(fetch));
    await expect(failure).rejects.toThrow(/cannot reach the Jupyter server: Failed to fetch/);
    await expect(failure).rejects.toMatchObject({ status: 0 });
  });

  it('refuses a success without JSON', async () => {
    const fetch = jest.fn().mockResolvedValue(answer(200, 'not json', 'text/plain'));
    await expect(requestAPI('models', {}, settingsWith(fetch))).rejects.toThrow(/no JSON/);
  });
});
