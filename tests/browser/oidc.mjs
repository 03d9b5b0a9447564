// A real OpenID provider for the tests (panva's oidc-provider, an OpenID-certified
// implementation), with its development login page: any password signs in the user named.
// Usage: node oidc.mjs PORT REDIRECT_URI CLIENT_SECRET
// Prints one JSON line when listening: {"issuer": ...}.
// Users and their groups: alice (idgraph-auditors), victor (idgraph-viewers), ada (idgraph-admins),
// nora (none).
// Besides the provider, GET /mint?case=NAME answers a JWT for the refusal tests, signed with the
// provider's own key unless the case is about the key or the signature:
//   valid, expired, nbf, audience, issuer, none, hs256, kid, tampered, norole.
import http from 'node:http';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const [port, redirect, secret] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const GROUPS = { alice: ['idgraph-auditors'], victor: ['idgraph-viewers'], ada: ['idgraph-admins'], nora: [] };

const { privateKey, publicKey } = await jose.generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await jose.exportJWK(privateKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
const rogue = await jose.generateKeyPair('RS256', { extractable: true });

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'idgraph',
    client_secret: secret,
    redirect_uris: [redirect],
    post_logout_redirect_uris: [redirect.replace('/auth/callback', '/')],
    grant_types: ['authorization_code', 'client_credentials'],
    response_types: ['code'],
  }],
  jwks: { keys: [jwk] },
  claims: { openid: ['sub'], email: ['email'], profile: ['name', 'preferred_username'], groups: ['groups'] },
  scopes: ['openid', 'email', 'profile', 'groups', 'api'],
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: `${id}@example.com`, name: id, preferred_username: id, groups: GROUPS[id] || [] };
      },
    };
  },
  // No consent page: the grant is given (a company's provider is configured the same way for
  // its own applications).
  async loadExistingGrant(ctx) {
    const id = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (id) return ctx.oidc.provider.Grant.find(id);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    grant.addOIDCClaims(['email', 'name', 'preferred_username', 'groups']);
    await grant.save();
    return grant;
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => false,
      getResourceServerInfo: () => ({ scope: 'api', audience: 'idgraph', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
    },
  },
  // An API client's token carries the group its client is in.
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'ClientCredentials') return { groups: ['idgraph-auditors'] };
    return undefined;
  },
});

async function mint(which) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: 'script-1', client_id: 'ci-script', groups: ['idgraph-auditors'] };
  const sign = (c, o = {}) =>
    new jose.SignJWT({ ...claims, ...c })
      .setProtectedHeader({ alg: 'RS256', kid: o.kid || 'k1' })
      .setIssuer(o.iss || issuer)
      .setAudience(o.aud || 'idgraph')
      .setIssuedAt(o.iat || now)
      .setExpirationTime(o.exp || now + 300)
      .sign(o.key || privateKey);
  switch (which) {
    case 'valid': return sign({});
    case 'norole': return sign({ groups: ['other'] });
    case 'expired': return sign({}, { iat: now - 7200, exp: now - 3600 });
    case 'nbf': return new jose.SignJWT({ ...claims, nbf: now + 3600 }).setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer(issuer).setAudience('idgraph').setIssuedAt(now).setExpirationTime(now + 7200).sign(privateKey);
    case 'audience': return sign({}, { aud: 'another-api' });
    case 'issuer': return sign({}, { iss: 'https://idp.attacker.example' });
    case 'none': return new jose.UnsecuredJWT({ ...claims, iss: issuer, aud: 'idgraph', exp: now + 300 }).encode();
    case 'hs256': {
      // The provider's public key used as an HMAC secret: the classic key-confusion forgery.
      const pem = new TextEncoder().encode(await jose.exportSPKI(publicKey));
      return new jose.SignJWT({ ...claims, groups: ['idgraph-admins'] }).setProtectedHeader({ alg: 'HS256', kid: 'k1' })
        .setIssuer(issuer).setAudience('idgraph').setIssuedAt(now).setExpirationTime(now + 300).sign(pem);
    }
    case 'kid': return sign({}, { kid: 'rogue', key: rogue.privateKey });
    case 'tampered': {
      const t = await sign({});
      const [h, , s] = t.split('.');
      const p = jose.base64url.encode(JSON.stringify({ ...claims, groups: ['idgraph-admins'], iss: issuer, aud: 'idgraph', iat: now, exp: now + 300 }));
      return `${h}.${p}.${s}`;
    }
    default: throw new Error('no such case: ' + which);
  }
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  if (req.url.startsWith('/mint?')) {
    try {
      const token = await mint(new URL(req.url, issuer).searchParams.get('case'));
      res.writeHead(200, { 'content-type': 'text/plain' }).end(token);
    } catch (e) {
      res.writeHead(400).end(String(e));
    }
    return;
  }
  callback(req, res);
});
server.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ issuer }) + '\n');
});
