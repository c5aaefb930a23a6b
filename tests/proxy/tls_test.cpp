// paygent-proxy's HTTPS upstream verifies the provider's certificate: against a TLS server with a
// self-signed certificate (openssl s_server on loopback) the call fails with 502 naming the TLS
// verification, and nothing is metered.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "proxy/server.h"
#include "tests/proxy/loopback.h"

namespace paygent::proxy {
namespace {

using namespace testing;

TEST_CASE("proxy.https_upstream_with_an_untrusted_certificate_is_refused") {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) {
    MESSAGE("SKIPPED: proxy TLS test: no openssl command");
    return;
  }
  const std::string dir = std::filesystem::temp_directory_path() / ("paygent-proxy-tls-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  REQUIRE(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout " + dir +
                       "/key.pem -out " + dir + "/cert.pem >/dev/null 2>&1").c_str()) == 0);
  // s_server is started on a port that was free a moment ago; on a loaded machine (ctest -j) it can take
  // seconds to come up, and the port can be taken in between: wait while the child lives, retry on exit.
  int port = 0;
  pid_t server = -1;
  bool up = false;
  for (int attempt = 0; attempt < 3 && !up; ++attempt) {
    ::close(listen_loopback(port));
    server = ::fork();
    if (server == 0) {
      const int null = ::open("/dev/null", O_RDWR);
      ::dup2(null, 0);
      ::dup2(null, 1);
      const int log = ::open((dir + "/s_server.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      ::dup2(log, 2);
      const std::string accept = "127.0.0.1:" + std::to_string(port);
      ::execlp("openssl", "openssl", "s_server", "-accept", accept.c_str(), "-cert", (dir + "/cert.pem").c_str(),
               "-key", (dir + "/key.pem").c_str(), "-www", nullptr);
      std::_Exit(127);
    }
    for (int i = 0; i < 1500 && !up; ++i) {  // up to 30 s while the child is alive
      try {
        ::close(connect_loopback(port));
        up = true;
      } catch (...) {
        if (::waitpid(server, nullptr, WNOHANG) == server) {
          server = -1;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    if (!up && server > 0) {
      ::kill(server, SIGKILL);
      ::waitpid(server, nullptr, 0);
    }
  }
  if (!up) {
    std::ifstream log(dir + "/s_server.log");
    MESSAGE("openssl s_server did not come up; its stderr: " << std::string(std::istreambuf_iterator<char>(log), {}));
  }
  REQUIRE(up);
  Options options;
  options.local_store_path = "";
  auto pg = *Paygent::create(proxy_paygent_options(std::move(options)));
  ProxyOptions proxy_options;
  proxy_options.listen_port = 0;
  proxy_options.upstream_openai = "https://127.0.0.1:" + std::to_string(port);
  proxy_options.upstream_timeout = absl::Seconds(5);
  auto proxy = *ProxyServer::start(proxy_options, pg.get());
  const HttpResponse r = post(proxy->port(), "/v1/chat/completions", R"({"model":"gpt-4o","messages":[]})",
                              {"x-paygent-user: tls"});
  CHECK(r.status == 502);
  CHECK(r.body.find("TLS handshake failed") != std::string::npos);
  CHECK(r.body.find("certificate") != std::string::npos);
  proxy->stop();
  ::kill(server, SIGTERM);
  ::waitpid(server, nullptr, 0);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace paygent::proxy
