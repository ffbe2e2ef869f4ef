# JupyterHub with GenericOAuthenticator and JupyterLab, at the versions the end-to-end test uses:
# e2e/requirements.txt (every package pinned) in a venv of Debian 12's Python 3.11, as scripts/setup
# makes it, and configurable-http-proxy 5.3.0 on Node 20 (it needs 20 or later; Debian 12's nodejs is
# 18). Build context: the repository (docker-compose.yml).
FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && npm install --global configurable-http-proxy@5.3.0 \
 && npm cache clean --force
COPY e2e/requirements.txt /opt/jupyterhub/requirements.txt
RUN python3 -m venv /opt/jupyterhub/venv \
 && /opt/jupyterhub/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /opt/jupyterhub/requirements.txt
ENV PATH=/opt/jupyterhub/venv/bin:$PATH
WORKDIR /srv/jupyterhub
CMD ["jupyterhub", "-f", "/srv/jupyterhub/jupyterhub_config.py"]
