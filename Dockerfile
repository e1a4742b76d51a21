# One image for the worker, the simulator and the tools: `streamrec <command>`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
# The CPU build of torch is not needed yet; MovieLens comes from recbole's data, without its deps.
RUN pip install --no-cache-dir . && pip install --no-cache-dir --no-deps recbole==1.2.1
ENV STREAMREC_WEB_HOST=0.0.0.0
ENTRYPOINT ["streamrec"]
