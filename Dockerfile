# Build: docker build -t gpumeter .
# Run:   docker run -p 8080:8080 -v gpumeter-data:/app/data gpumeter
# (CPU image: DJL's CPU libtorch is inside the jar. For CUDA see metering/README.md.)
FROM eclipse-temurin:17-jdk AS build
WORKDIR /src
COPY . .
# The Maven build also builds the web console with node 20 and npm (server/README.md, "Web console").
COPY --from=node:20-bookworm-slim /usr/local/bin/node /usr/local/bin/node
COPY --from=node:20-bookworm-slim /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
RUN ./mvnw -q -B install -Dmaven.test.skip=true

FROM eclipse-temurin:17-jre
# PostgreSQL refuses to run as root; the embedded database runs as this user.
RUN useradd --create-home --uid 1001 gpumeter
WORKDIR /app
COPY --from=build /src/server/target/gpumeter-server.jar /app/gpumeter-server.jar
COPY --from=build /src/models /app/models
RUN mkdir -p /app/data && chown -R gpumeter /app
USER gpumeter
EXPOSE 8080
ENTRYPOINT ["java", "-jar", "/app/gpumeter-server.jar"]
CMD ["serve"]
