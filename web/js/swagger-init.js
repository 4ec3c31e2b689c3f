// /docs: Swagger UI (vendored in ../vendor/swagger-ui) for this server's /openapi.json.
// A classic script, not a module: swagger-ui-bundle.js defines the global SwaggerUIBundle.
(function () {
  "use strict";
  var node = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: node.dataset.openapiUrl,
    domNode: node,
    deepLinking: true,
    validatorUrl: null, // never ask validator.swagger.io
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
